//! Records the compiler that builds xtask, so reports name the toolchain that produced the
//! measured code rather than whatever `rustc` happens to be on PATH at run time.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown rustc".to_string());
    println!("cargo:rustc-env=XTASK_RUSTC_VERSION={version}");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=XTASK_BUILD_PROFILE={profile}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
