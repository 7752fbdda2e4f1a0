//! Markdown and CSV rendering, and number formatting shared by the reports.

use std::fmt::Write as _;

/// A GitHub-flavoured markdown table. Cells are escaped so a `|` in a symbol name cannot break
/// the row.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles; columns whose title starts with `>` are right-aligned
    /// (the `>` is not printed).
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        let mut right = Vec::new();
        let header = header
            .iter()
            .map(|h| {
                let h = h.as_ref();
                right.push(h.starts_with('>'));
                h.trim_start_matches('>').to_string()
            })
            .collect();
        Table { header, right, rows: Vec::new() }
    }

    /// Appends a row; missing cells are left empty, extra cells are an error in the caller and
    /// are dropped so the table stays well-formed.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// The table as markdown, ending with a newline.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| {
            let escaped: Vec<String> = cells.iter().map(|c| escape_md(c)).collect();
            format!("| {} |\n", escaped.join(" | "))
        };
        out.push_str(&line(&self.header));
        let rule: Vec<String> = self.right.iter().map(|&r| if r { "---:".into() } else { "---".into() }).collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

fn escape_md(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

/// One CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One CSV record with a trailing newline.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(f.as_ref()));
    }
    out.push('\n');
    out
}

/// Bytes with a binary unit, e.g. `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// A number with three significant figures, switching to no decimals from 1000 on.
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A percentage with one decimal.
pub fn pct(fraction: f64) -> String {
    if fraction.is_finite() { format!("{:.1} %", fraction * 100.0) } else { "n/a".into() }
}

/// A key: value list as markdown bullets.
pub fn bullets(items: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in items {
        let _ = writeln!(out, "- **{k}**: {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_table_aligns_and_escapes() {
        let mut t = Table::new(&["function", ">self %"]);
        t.row(["<a as b>::c|d", "12.5 %"]);
        t.row(["short"]);
        assert_eq!(
            t.to_markdown(),
            "| function | self % |\n|---|---:|\n| <a as b>::c\\|d | 12.5 % |\n| short |  |\n"
        );
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_record(&["a", "b,c", "say \"hi\"", "3.5"]), "a,\"b,c\",\"say \"\"hi\"\"\",3.5\n");
    }

    #[test]
    fn number_formats() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(sig3(1234.4), "1234");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(0.12345), "0.123");
        assert_eq!(sig3(f64::NAN), "n/a");
        assert_eq!(pct(0.1234), "12.3 %");
    }
}
