//! `lb.toml(5)`: the configuration reference (docs/config.md) rendered as a man page, so the two
//! can never disagree. A small Markdown-to-roff converter for what that file uses: headings,
//! paragraphs, lists, code blocks and tables (a table row becomes a tagged paragraph).

/// The reference this page is made from.
pub const SOURCE: &str = include_str!("../../../docs/config.md");

/// The whole page, in roff (man macros).
pub fn page(version: &str) -> String {
    render(SOURCE, version)
}

fn render(markdown: &str, version: &str) -> String {
    let mut out = format!(
        ".TH LB.TOML 5 \"\" \"lb {version}\" \"File Formats\"\n.SH NAME\n\
         lb.toml \\- configuration file of the lb(8) load balancer director\n\
         .SH SYNOPSIS\n/etc/lb/lb.toml\n"
    );
    let mut lines = markdown.lines().peekable();
    let mut header: Option<Vec<String>> = None;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_end();
        if let Some(title) = trimmed.strip_prefix("# ") {
            // The document title: the description follows.
            out.push_str(&format!(".SH DESCRIPTION\n.\\\" {}\n", escape(title)));
        } else if let Some(title) = trimmed.strip_prefix("## ") {
            out.push_str(&format!(".SH \"{}\"\n", plain(title).to_uppercase().replace('"', "")));
        } else if let Some(title) = trimmed.strip_prefix("### ") {
            out.push_str(&format!(".SS \"{}\"\n", plain(title).replace('"', "")));
        } else if trimmed.starts_with("```") {
            out.push_str(".PP\n.RS 4\n.nf\n");
            for code in lines.by_ref() {
                if code.trim_end().starts_with("```") {
                    break;
                }
                out.push_str(&literal(code));
                out.push('\n');
            }
            out.push_str(".fi\n.RE\n");
        } else if trimmed.starts_with('|') {
            let cells = table_cells(trimmed);
            match &header {
                None => header = Some(cells),
                Some(_) if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) => {}
                Some(names) => out.push_str(&table_row(names, &cells)),
            }
            if !lines.peek().is_some_and(|next| next.trim_start().starts_with('|')) {
                header = None;
            }
        } else if let Some(item) = trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* "))
        {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", escape(item)));
        } else if trimmed.is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&escape(trimmed.trim_start()));
            out.push('\n');
        }
    }
    out.push_str(".SH SEE ALSO\nlb(8), lb\\-check(8), lb\\-run(8)\n");
    out
}

/// `| a | b \| c |` → ["a", "b | c"] (an escaped bar stays in its cell).
fn table_cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '|' => cells.push(String::new()),
            _ => {
                let c = if c == '\\' && chars.peek() == Some(&'|') {
                    chars.next().unwrap_or(c)
                } else {
                    c
                };
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// A table row: the first cell is the tag, the middle cells "column: value", the last the text.
fn table_row(names: &[String], cells: &[String]) -> String {
    // A row continuing the one above leaves its first cells empty: the first written one tags it.
    let Some(first) = cells.iter().position(|c| !c.is_empty()) else {
        return String::new();
    };
    let (tag, rest) = (&cells[first], &cells[first + 1..]);
    let mut body: Vec<String> = Vec::new();
    let last = rest.len().saturating_sub(1);
    for (i, cell) in rest.iter().enumerate() {
        if cell.is_empty() {
            continue;
        }
        let name = names.get(first + i + 1).map(|n| plain(n)).unwrap_or_default();
        if i == last && matches!(name.as_str(), "meaning" | "") {
            body.push(escape(cell));
        } else {
            body.push(format!("{}: {}.", escape(&name), escape(cell)));
        }
    }
    format!(".TP\n{}\n{}\n", escape(tag), body.join("\n"))
}

/// Inline Markdown without markup (for headings).
fn plain(text: &str) -> String {
    links(text).replace(['`', '*'], "")
}

/// `[text](target)` → `text`.
fn links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else {
            break;
        };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Text for roff: `code` and **strong** in bold, links as their text, special characters escaped.
fn escape(text: &str) -> String {
    let text = links(text);
    let mut out = String::new();
    let mut bold = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            _ => out.push_str(&glyph(c)),
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    line_start(out)
}

/// Code kept as written (only roff's own characters escaped).
fn literal(text: &str) -> String {
    line_start(text.chars().map(glyph).collect())
}

/// A line starting with `.` or `'` would be a roff request.
fn line_start(line: String) -> String {
    if line.starts_with(['.', '\'']) { format!("\\&{line}") } else { line }
}

/// One character as roff wants it: its special characters escaped, typographic ones named so the
/// page renders in any locale.
fn glyph(c: char) -> String {
    match c {
        '\\' => "\\e".to_owned(),
        '-' => "\\-".to_owned(),
        '–' => "\\(en".to_owned(),
        '—' => "\\(em".to_owned(),
        '−' => "\\(mi".to_owned(),
        '×' => "\\(mu".to_owned(),
        '≥' => "\\(>=".to_owned(),
        '≤' => "\\(<=".to_owned(),
        '→' => "\\(->".to_owned(),
        _ => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_markdown_the_reference_uses() {
        // (markdown, fragment the page must contain)
        let cases = [
            ("## `[dataplane]`", ".SH \"[DATAPLANE]\""),
            ("### In `[[virtual_server]]`", ".SS \"In [[virtual_server]]\""),
            ("Use `lb check` first.", "Use \\fBlb check\\fR first."),
            ("See [VRRP](#vrrp).", "See VRRP."),
            (".dot at the start", "\\&.dot at the start"),
            ("1–2 × 3 ≥ a\\b", "1\\(en2 \\(mu 3 \\(>= a\\eb"),
            ("- an item", ".IP \\(bu 2\nan item"),
            ("```toml\n[x]\n.y = 1\n```", ".nf\n[x]\n\\&.y = 1\n.fi"),
            ("| a | b | c |\n|---|---|---|\n| | `x` | y |", ".TP\n\\fBx\\fR\nc: y.\n"),
            (
                "| key | type | default | meaning |\n|---|---|---|---|\n| `k` | `\"a\"` \\| `\"b\"` | `1` | Does it. |",
                ".TP\n\\fBk\\fR\ntype: \\fB\"a\"\\fR | \\fB\"b\"\\fR.\ndefault: \\fB1\\fR.\nDoes it.\n",
            ),
        ];
        for (markdown, want) in cases {
            let page = render(markdown, "0.0.0");
            assert!(page.contains(want), "{markdown:?}: no {want:?} in\n{page}");
        }
    }

    #[test]
    fn every_key_of_the_reference_is_on_the_page() {
        let page = page("0.1.0");
        let keys: Vec<&str> = SOURCE
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        assert!(keys.len() > 40, "the reference's tables were found: {keys:?}");
        for key in keys {
            let roff = format!("\\fB{}\\fR", key.replace('-', "\\-"));
            assert!(page.contains(&roff), "{key} missing from lb.toml(5)");
        }
        // No line may be read as a roff request by accident.
        for line in page.lines().filter(|l| l.starts_with('.')) {
            let request = line[1..].split_whitespace().next().unwrap_or("");
            let known = ["TH", "SH", "SS", "PP", "TP", "IP", "RS", "RE", "nf", "fi", "\\\""];
            assert!(known.contains(&request), "stray request: {line}");
        }
    }
}
