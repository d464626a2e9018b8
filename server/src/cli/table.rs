//! Plain-text tables for the admin CLI: left-aligned columns sized to their widest cell.

/// A table being built.
pub(super) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(super) fn new<const N: usize>(headers: [&str; N]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Appends a row.
    pub(super) fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| c.replace(['\n', '\t'], " "))
                .collect(),
        );
    }

    /// Renders the table.
    pub(super) fn render(&self) -> String {
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
    pub(super) fn print(&self) {
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
