//! The ggufembed command-line tool.
fn main() {}
