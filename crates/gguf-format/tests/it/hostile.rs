//! Hostile input: every malformation is a typed error with an offset, never a panic.
