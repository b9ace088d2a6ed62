//! Diagnostics for rule files: errors and warnings that point at a file, line and column.
//!
//! Every problem found while reading a rules file (TOML syntax, shape, meaning) becomes a
//! [`Diagnostic`] with the byte span of the offending text. [`Diagnostics`] renders them
//! the way compilers do: `file:line:col: error: message`, the source line, a caret
//! underline, and an optional `help:` line.

use std::fmt;
use std::ops::Range;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The file is rejected.
    Error,
    /// The file is accepted, but something looks wrong.
    Warning,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

/// One problem in a rules file, located by byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub level: Level,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Byte range of the offending text in the file (empty when unknown).
    pub span: Range<usize>,
    /// A hint on how to fix it.
    pub help: Option<String>,
    /// 1-based line of the span start.
    pub line: usize,
    /// 1-based column (in characters) of the span start.
    pub col: usize,
    /// The whole source line the span starts on, without its newline.
    pub snippet: String,
    /// Width of the underline, in characters (at least 1).
    underline: usize,
    /// File name as given by the caller.
    pub path: String,
}

impl Diagnostic {
    /// Builds a diagnostic located in `text` (the whole file) at `span`. Public so that
    /// the agent reports what its `[agent]` values mean (see
    /// [`Config::with_agent_table`](crate::Config::with_agent_table)) in the same form.
    pub fn new(
        level: Level,
        path: &str,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let col = text[line_start..start].chars().count() + 1;
        let snippet = text[line_start..line_end].trim_end_matches('\r').to_owned();
        let underline = text[start..end.min(line_end)].chars().count().max(1);
        Diagnostic {
            level,
            message: message.into(),
            span: start..end,
            help,
            line,
            col,
            snippet,
            underline,
            path: path.to_owned(),
        }
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}: {}",
            self.path,
            self.line,
            self.col,
            self.level.as_str(),
            self.message
        )?;
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {}", self.snippet)?;
        let lead: String = self
            .snippet
            .chars()
            .take(self.col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{pad} | {lead}{}", "^".repeat(self.underline))?;
        if let Some(help) = &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        Ok(())
    }
}

/// Everything found wrong with one rules file: errors (the file is rejected) and
/// warnings (it is accepted). Displays every error, then every warning, each as
/// `file:line:col: level: message` followed by the source line.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics {
    /// Problems that reject the file, in file order.
    pub errors: Vec<Diagnostic>,
    /// Problems that do not, in file order.
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    /// True if there is no error (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        match d.level {
            Level::Error => self.errors.push(d),
            Level::Warning => self.warnings.push(d),
        }
    }

    pub(crate) fn sort(&mut self) {
        self.errors.sort_by_key(|d| (d.span.start, d.span.end));
        self.warnings.sort_by_key(|d| (d.span.start, d.span.end));
        self.errors.dedup();
        self.warnings.dedup();
    }

    /// A one-line count: "2 errors, 1 warning".
    pub fn summary(&self) -> String {
        fn n(k: usize, what: &str) -> String {
            format!("{k} {what}{}", if k == 1 { "" } else { "s" })
        }
        format!(
            "{}, {}",
            n(self.errors.len(), "error"),
            n(self.warnings.len(), "warning")
        )
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().chain(&self.warnings).enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file while it is being read.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub path: &'a str,
    pub text: &'a str,
    pub diags: Diagnostics,
}

impl<'a> Sink<'a> {
    pub fn new(path: &'a str, text: &'a str) -> Sink<'a> {
        Sink {
            path,
            text,
            diags: Diagnostics::default(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.emit(Level::Error, span, message, None);
    }

    pub fn error_help(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.emit(Level::Error, span, message, Some(help.into()));
    }

    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.emit(Level::Warning, span, message, None);
    }

    pub fn warn_help(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.emit(Level::Warning, span, message, Some(help.into()));
    }

    pub fn emit(
        &mut self,
        level: Level,
        span: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let d = Diagnostic::new(level, self.path, self.text, span, message, help);
        self.diags.push(d);
    }

    /// A TOML error (syntax or shape) as a diagnostic.
    pub fn toml(&mut self, err: &toml::de::Error) {
        let span = err.span().unwrap_or(0..0);
        let message = err.message().trim().replace('\n', "; ");
        let help = unknown_field_hint(&message);
        self.emit(Level::Error, span, message, help);
    }

    pub fn has_errors(&self) -> bool {
        !self.diags.errors.is_empty()
    }

    pub fn finish(mut self) -> Diagnostics {
        self.diags.sort();
        self.diags
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`": a did-you-mean hint.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(word, candidates.iter().copied()).map(|c| format!("did you mean `{c}`?"))
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let limit = (word.chars().count() / 3).max(1);
    best.filter(|&(d, _)| d <= limit).map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// transpositions of neighbours each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, span: Range<usize>, expected: &str) {
        let d = Diagnostic::new(Level::Error, "f.toml", text, span, "bad", None);
        assert_eq!(d.to_string(), expected);
    }

    #[test]
    fn renders_line_col_and_caret() {
        check(
            "a = 1\nb = 2\n",
            6..7,
            "f.toml:2:1: error: bad\n  |\n2 | b = 2\n  | ^",
        );
        check(
            "x = \"é\"\ntreshold = 3\n",
            9..17,
            "f.toml:2:1: error: bad\n  |\n2 | treshold = 3\n  | ^^^^^^^^",
        );
        check(
            "é = 1",
            2..3,
            "f.toml:1:2: error: bad\n  |\n1 | é = 1\n  |  ^",
        );
        check("", 5..9, "f.toml:1:1: error: bad\n  |\n1 | \n  | ^");
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(
            did_you_mean("treshold", ["threshold", "above"]),
            Some("threshold")
        );
        assert_eq!(did_you_mean("edca", ["edac", "hwmon"]), Some("edac"));
        assert_eq!(did_you_mean("banana", ["edac", "hwmon"]), None);
        assert_eq!(
            unknown_field_hint("unknown field `intervall`, expected one of `interval`, `edac`"),
            Some("did you mean `interval`?".to_owned())
        );
        assert_eq!(
            unknown_field_hint("unknown field `zzz`, expected `command`"),
            None
        );
    }
}
