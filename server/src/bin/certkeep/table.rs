//! Plain-text tables for the admin CLI: left-aligned columns sized to their widest cell, and the
//! cell formats they share.

use time::OffsetDateTime;

/// A time cell: RFC 3339, or `-`.
pub(crate) fn time(t: Option<OffsetDateTime>) -> String {
    t.map(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    })
    .unwrap_or_else(|| "-".into())
}

/// An optional text cell, or `-`.
pub(crate) fn opt(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// A list cell: comma-separated, or `-` when empty.
pub(crate) fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A table being built.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new<const N: usize>(headers: [&str; N]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Appends a row.
    pub(crate) fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| c.replace(['\n', '\t'], " "))
                .collect(),
        );
    }

    /// Renders the table.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(["NAME", "STATE"]);
        t.row(["www".into(), "valid".into()]);
        t.row(["a-long-name".into(), "pending".into()]);
        assert_eq!(
            t.render(),
            "NAME         STATE\nwww          valid\na-long-name  pending\n"
        );
    }
}
