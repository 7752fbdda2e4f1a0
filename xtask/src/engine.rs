//! What the harness needs from an embedding engine, so the measuring code is independent of the
//! runtime's API and can be tested with a fake.

use std::fmt;
use std::str::FromStr;

/// A parallelism mode as the reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// One forward pass at a time, every matmul split across the workers.
    Fine,
    /// Texts in parallel, serial matmuls.
    Coarse,
    /// The runtime's per-call choice.
    Auto,
}

impl Mode {
    /// Lower-case name used on the command line, in folders and in CSV.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fine => "fine",
            Mode::Coarse => "coarse",
            Mode::Auto => "auto",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fine" => Ok(Mode::Fine),
            "coarse" => Ok(Mode::Coarse),
            "auto" => Ok(Mode::Auto),
            other => Err(format!("unknown mode {other:?} (expected fine, coarse or auto)")),
        }
    }
}

/// An embedding engine with a fixed thread count.
pub trait Engine {
    /// Worker threads the engine runs on.
    fn threads(&self) -> usize;
    /// Name of the kernel instruction set the matmuls run on (`avx512vnni`, `avx2`, ...).
    fn isa(&self) -> String;
    /// Embeds `texts` in `mode`; returns the token ids that went through the model, summed.
    fn embed(&self, texts: &[&str], mode: Mode) -> anyhow::Result<usize>;
    /// The mode a call with `mode` runs for `texts` (what `Auto` picks). Called outside the
    /// timed region, since it tokenizes.
    fn resolve(&self, texts: &[&str], mode: Mode) -> Mode;
    /// Unit vectors for `texts` (for cross-checks against a peer), default mode.
    fn vectors(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>>;
    /// Token ids the engine feeds the model for `text` (with `<bos>`/`<eos>`).
    fn token_count(&self, text: &str) -> anyhow::Result<usize>;
}

/// Parses a comma-separated mode list (`fine,coarse,auto`), keeping order, dropping repeats.
pub fn parse_modes(s: &str) -> Result<Vec<Mode>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let m: Mode = part.parse()?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err("no mode given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_order_without_repeats() {
        assert_eq!(parse_modes("fine, Coarse,auto,fine").unwrap(), vec![Mode::Fine, Mode::Coarse, Mode::Auto]);
        assert!(parse_modes("fast").is_err());
        assert!(parse_modes(",").is_err());
        assert_eq!(Mode::Coarse.to_string(), "coarse");
    }
}
