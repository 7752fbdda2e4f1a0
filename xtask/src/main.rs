fn main() -> anyhow::Result<()> {
    anyhow::bail!("no xtask subcommands yet")
}
