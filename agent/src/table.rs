//! Plain-text tables for the human output of `sensors`, `inspect` and the agent's
//! checks: columns sized to their widest cell, numbers right-aligned, and cells that
//! may be highlighted (bold red) when the output is a terminal. Highlighting never
//! changes a cell's width, so a table lines up the same in colour and without.

use std::fmt::Write as _;

/// Horizontal alignment of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// One cell: its text and whether it deserves attention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    text: String,
    alert: bool,
}

impl Cell {
    /// A plain cell.
    pub fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            alert: false,
        }
    }

    /// A cell that is highlighted on a terminal when `alert` holds.
    pub fn alert(text: impl Into<String>, alert: bool) -> Cell {
        Cell {
            text: text.into(),
            alert,
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::new(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::new(s)
    }
}

/// A table: a header row, then rows of cells, drawn with two spaces between columns.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column titles and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            header: columns.iter().map(|(t, _)| (*t).to_owned()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing trailing cells are empty.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, each line indented by `indent` spaces and ending in a newline; alert
    /// cells in bold red when `color`. A column whose cells are all empty is left out.
    pub fn render(&self, indent: usize, color: bool) -> String {
        let n = self.header.len();
        let used: Vec<bool> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .any(|r| r.get(i).is_some_and(|c| !c.text.is_empty()))
            })
            .collect();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(n) {
                width[i] = width[i].max(c.text.chars().count());
            }
        }
        let mut out = String::new();
        let empty = Cell::default();
        let header: Vec<Cell> = self.header.iter().map(|h| Cell::new(h.as_str())).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = " ".repeat(indent);
            let mut first = true;
            for i in (0..n).filter(|&i| used[i]) {
                let cell = row.get(i).unwrap_or(&empty);
                let pad = width[i] - cell.text.chars().count();
                if !first {
                    line.push_str("  ");
                }
                first = false;
                let text = if color && cell.alert {
                    format!("\x1b[1;31m{}\x1b[0m", cell.text)
                } else {
                    cell.text.clone()
                };
                match self.align[i] {
                    Align::Left => {
                        line.push_str(&text);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(&text);
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// Whether human output to stdout may use colour: stdout is a terminal and `NO_COLOR`
/// is not set (<https://no-color.org>).
pub fn stdout_color() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_with_and_without_colour() {
        let mut t = Table::new(&[("name", Align::Left), ("value", Align::Right)]);
        t.row(vec!["rx_errors".into(), Cell::alert("12", true)]);
        t.row(vec!["tx".into(), Cell::alert("0", false)]);
        let plain = t.render(2, false);
        assert_eq!(
            plain,
            "  name       value\n  rx_errors     12\n  tx             0\n"
        );
        let color = t.render(2, true);
        assert_eq!(
            color.replace("\x1b[1;31m", "").replace("\x1b[0m", ""),
            plain
        );
        assert!(color.contains("\x1b[1;31m12\x1b[0m"), "{color:?}");
        // An empty column is left out.
        let mut t = Table::new(&[("a", Align::Left), ("b", Align::Left), ("c", Align::Left)]);
        t.row(vec!["1".into(), "".into(), "3".into()]);
        assert_eq!(t.render(0, false), "a  c\n1  3\n");
    }
}
