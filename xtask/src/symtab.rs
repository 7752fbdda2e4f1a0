//! Full function paths from the executable's ELF symbol table.
//!
//! With `debug = "line-tables-only"` the DWARF names of functions are bare (`int8_tile_vnni`), so
//! the unwinder's names lose their module. The symbol table still holds every non-inlined
//! function's mangled path, so the outermost function at each return address is looked up here;
//! inlined frames inside it are qualified from their source file (`stage::qualified_name`).

use std::sync::OnceLock;

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// Function symbols of the running executable, sorted by address.
pub struct Symtab {
    /// Runtime address minus link-time address (non-zero for position-independent executables).
    bias: u64,
    /// (start, end, demangled path without hash), sorted by start.
    funcs: Vec<(u64, u64, String)>,
}

impl Symtab {
    /// The symbol table of `/proc/self/exe`, read once; `None` where it cannot be read.
    pub fn get() -> Option<&'static Symtab> {
        static TABLE: OnceLock<Option<Symtab>> = OnceLock::new();
        TABLE.get_or_init(Symtab::load).as_ref()
    }

    fn load() -> Option<Symtab> {
        let exe = std::fs::read_link("/proc/self/exe").ok()?;
        let data = std::fs::read(&exe).ok()?;
        let file = object::File::parse(&*data).ok()?;
        // The segment mapped from file offset 0 tells the load bias.
        let first_vaddr = file.segments().find(|s| s.file_range().0 == 0).map(|s| s.address())?;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let start = map_start(&maps, &exe.to_string_lossy())?;
        let mut funcs: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                Some((s.address(), s.address() + s.size(), format!("{:#}", rustc_demangle::demangle(name))))
            })
            .collect();
        funcs.sort_by_key(|f| f.0);
        Some(Symtab { bias: start.wrapping_sub(first_vaddr), funcs })
    }

    /// The function containing runtime address `addr`.
    pub fn lookup(&self, addr: usize) -> Option<&str> {
        self.lookup_svma((addr as u64).wrapping_sub(self.bias) as usize)
    }

    /// The function containing link-time address `a` (as the ELF file states it).
    pub fn lookup_svma(&self, a: usize) -> Option<&str> {
        let a = a as u64;
        let i = self.funcs.partition_point(|f| f.0 <= a).checked_sub(1)?;
        let (start, end, name) = &self.funcs[i];
        (a >= *start && a < *end).then_some(name.as_str())
    }
}

/// Start address of the mapping of `path` at file offset 0 in a `/proc/<pid>/maps` text.
pub fn map_start(maps: &str, path: &str) -> Option<u64> {
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let range = parts.next()?;
        let _perms = parts.next()?;
        let offset = parts.next()?;
        let _dev = parts.next()?;
        let _inode = parts.next()?;
        let file = parts.next()?;
        (file == path && u64::from_str_radix(offset, 16).ok()? == 0)
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_the_base_of_the_executable() {
        let maps = "\
5581a000-5581b000 r--p 00000000 08:01 123 /usr/bin/other
55d3e000-55d40000 r--p 00000000 08:01 456 /work/t/xtask
55d40000-55d90000 r-xp 00002000 08:01 456 /work/t/xtask
7ffd-7ffe rw-p 00000000 00:00 0 [stack]";
        assert_eq!(map_start(maps, "/work/t/xtask"), Some(0x55d3e000));
        assert_eq!(map_start(maps, "/nowhere"), None);
    }

    #[inline(never)]
    fn a_function_with_a_known_path() -> usize {
        std::hint::black_box(42)
    }

    #[test]
    fn this_test_binary_resolves_its_own_functions() {
        let table = Symtab::get().expect("the test binary's symbol table is readable");
        let addr = a_function_with_a_known_path as fn() -> usize as usize;
        assert_eq!(table.lookup(addr), Some("xtask::symtab::tests::a_function_with_a_known_path"));
        assert_eq!(table.lookup(0), None);
        let svma = addr - table.bias as usize;
        assert_eq!(table.lookup_svma(svma), Some("xtask::symtab::tests::a_function_with_a_known_path"));
    }
}
