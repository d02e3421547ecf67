//! Reading a TOML file again after a small change (a reload): the `[[virtual_server]]` blocks
//! that did not change are not parsed again.
//!
//! A file is split at the lines that start with `[[virtual_server]]`: a head (everything
//! before the first, any section but services) and blocks (one such line up to the next). Each
//! part is parsed alone with the file's line numbers (`toml::parse_part`), and the model is the
//! head's settings with the blocks' services in file order. That equals reading the whole file
//! when every part reads alone without error: a part that ends inside a multi-line string or
//! array does not (so every split line is a table header of the whole file too), the head holds
//! no `virtual_server` key and a block nothing else (so no key is defined twice across parts),
//! and a block's `[virtual_server.*]` tables belong to its own last service in both readings.
//! A block whose text and first line equal one of the last file's is taken from the memo
//! instead; a line added above moves the blocks below it, which are then parsed again (their
//! locations changed). Whenever a part does not read alone, the whole file is read the usual
//! way, so diagnostics are always those of the whole file.

use std::ops::Range;
use std::path::Path;

use super::model::{Config, VirtualServer};
use super::toml::{Part, parse_part};

/// What starts a block.
const HEADER: &str = "[[virtual_server]]";

/// The blocks of the last file read through [`parse`], for the next one.
#[derive(Debug, Default)]
pub struct ParseMemo {
    text: String,
    /// In file order.
    blocks: Vec<Block>,
    /// Blocks the last read took from the memo (0 when it read the whole file), for the reload's
    /// log line.
    reused: usize,
}

#[derive(Debug)]
struct Block {
    lines_before: usize,
    /// In the memo's text.
    range: Range<usize>,
    services: Vec<VirtualServer>,
}

impl ParseMemo {
    /// How many `[[virtual_server]]` blocks the last read took unchanged from the one before (0
    /// when it read the whole file).
    pub fn reused(&self) -> usize {
        self.reused
    }

    /// The services of the last file's block that starts after `lines_before` lines with `text`.
    fn find(&self, lines_before: usize, text: &str) -> Option<usize> {
        let i = self.blocks.binary_search_by_key(&lines_before, |b| b.lines_before).ok()?;
        (self.text.get(self.blocks[i].range.clone()) == Some(text)).then_some(i)
    }
}

/// The head's range and each block's (lines before it, range).
fn split(text: &str) -> (Range<usize>, Vec<(usize, Range<usize>)>) {
    let mut starts = Vec::new();
    let mut offset = 0;
    for (line, content) in text.split_inclusive('\n').enumerate() {
        if content.starts_with(HEADER) {
            starts.push((line, offset));
        }
        offset += content.len();
    }
    let head = 0..starts.first().map_or(text.len(), |&(_, start)| start);
    let ends = starts.iter().skip(1).map(|&(_, start)| start).chain([text.len()]);
    let blocks = starts.iter().zip(ends).map(|(&(line, start), end)| (line, start..end)).collect();
    (head, blocks)
}

/// The model of `text` from its parts, reusing `memo`'s unchanged blocks, and the memo updated
/// to `text`; `None` (the memo unchanged) when the parts do not read alone without error: the
/// caller then reads the whole file.
pub(super) fn parse(text: &str, source: &Path, memo: &mut ParseMemo) -> Option<Config> {
    memo.reused = 0;
    let (head, parts) = split(text);
    let mut config = parse_part(&text[head], source, 0, Part::Head)?;
    // Each block: the memo's block it equals, else its services read now.
    let mut found: Vec<Result<usize, Vec<VirtualServer>>> = Vec::with_capacity(parts.len());
    for (lines_before, range) in &parts {
        let part = &text[range.clone()];
        found.push(match memo.find(*lines_before, part) {
            Some(i) => Ok(i),
            None => Err(parse_part(part, source, *lines_before, Part::Services)?.virtual_servers),
        });
    }
    let count = found
        .iter()
        .map(|f| f.as_ref().map_or_else(Vec::len, |&i| memo.blocks[i].services.len()))
        .sum();
    let reused = found.iter().filter(|f| f.is_ok()).count();
    let mut services = Vec::with_capacity(count);
    let mut blocks = Vec::with_capacity(parts.len());
    for (found, (lines_before, range)) in found.into_iter().zip(parts) {
        let block_services = match found {
            Ok(i) => std::mem::take(&mut memo.blocks[i].services),
            Err(read) => read,
        };
        services.extend(block_services.iter().cloned());
        blocks.push(Block { lines_before, range, services: block_services });
    }
    config.virtual_servers = services;
    *memo = ParseMemo { text: text.to_owned(), blocks, reused };
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::FakeHost;
    use super::super::{ConfigErrors, parse_toml, parse_toml_reusing};
    use super::*;

    const BASE: &str = "\
# director
[dataplane]
max_services = 64

[[virtual_server]]
vip = '192.0.2.1'
port = 80
interface = 'eth0'
[[virtual_server.real_server]]
address = '198.51.100.10'
weight = 2
[virtual_server.real_server.tcp_check]
connect_timeout = 3
[[virtual_server.real_server]]
address = '198.51.100.11'

[[virtual_server]]
vip = '192.0.2.2'
port = 443
interface = 'eth0'
[[virtual_server.real_server]]
address = '198.51.100.20'
[virtual_server.sorry_server]
address = '198.51.100.99'

[[virtual_server]]
vip = '192.0.2.3'
port = 53
protocol = 'udp'
interface = 'eth0'
[[virtual_server.real_server]]
address = '198.51.100.30'
[[virtual_server.real_server]]
address = '198.51.100.31'
";

    /// What a reading gives: the model's every field and location, or the errors.
    fn shown(result: Result<Config, ConfigErrors>) -> String {
        match result {
            Ok(config) => format!("{config:#?}"),
            Err(errors) => format!("errors:\n{errors}"),
        }
    }

    /// [`BASE`] with its first `from` replaced by `to`.
    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from}");
        BASE.replacen(from, to, 1)
    }

    /// Where each block of [`BASE`] starts, and its end.
    fn block_starts() -> Vec<usize> {
        let mut starts: Vec<usize> = BASE.match_indices(HEADER).map(|(i, _)| i).collect();
        starts.push(BASE.len());
        starts
    }

    /// For each edit of [`BASE`]: read through a memo of BASE, the result equals the whole-file
    /// reading of the edited text (every field, location and diagnostic), reusing the blocks it
    /// should (`None`: the parts do not read alone and the whole file is read).
    #[test]
    fn reading_with_the_memo_equals_reading_the_whole_file() {
        let b = block_starts();
        let second_header = "\n[[virtual_server]]\nvip = '192.0.2.2'";
        let service_4 = "[[virtual_server]]\nvip = '192.0.2.4'\nport = 80\ninterface = 'eth0'\n";
        let cases: Vec<(&str, String, Option<usize>)> = vec![
            ("unchanged", BASE.to_owned(), Some(3)),
            ("a weight changed", edit("weight = 2", "weight = 5"), Some(2)),
            ("a value in the last block", edit("port = 53", "port = 54"), Some(2)),
            ("a block added at the end", format!("{BASE}{service_4}"), Some(3)),
            ("a block removed", format!("{}{}", &BASE[..b[1]], &BASE[b[2]..]), Some(1)),
            (
                "the last block first",
                format!("{}{}{}", &BASE[..b[0]], &BASE[b[2]..], &BASE[b[0]..b[2]]),
                Some(0),
            ),
            (
                "the VIPs of two blocks swapped",
                BASE.replacen("192.0.2.1'", "192.0.2.X'", 1)
                    .replacen("192.0.2.2'", "192.0.2.1'", 1)
                    .replacen("192.0.2.X'", "192.0.2.2'", 1),
                Some(1),
            ),
            ("a line inserted above", format!("# new\n{BASE}"), Some(0)),
            (
                "a line inserted in the first block",
                edit("port = 80\n", "port = 80\n# note\n"),
                Some(0),
            ),
            ("a line inserted in the last block", edit("port = 53\n", "port = 53\n\n"), Some(2)),
            ("a head setting changed", edit("max_services = 64", "max_services = 65"), Some(3)),
            ("an unknown key", edit("weight = 2", "weigth = 2"), None),
            ("a value of the wrong type", edit("port = 443", "port = '443'"), None),
            ("a syntax error", edit("port = 443", "port = "), None),
            ("an unknown key in the head", edit("max_services = 64", "max_service = 64"), None),
            (
                "a duplicate service (validation)",
                edit("vip = '192.0.2.2'\nport = 443", "vip = '192.0.2.1'\nport = 80"),
                Some(2),
            ),
            (
                "an unknown interface (validation)",
                edit(
                    "protocol = 'udp'\ninterface = 'eth0'",
                    "protocol = 'udp'\ninterface = 'eth9'",
                ),
                Some(2),
            ),
            (
                "a header inside a multi-line string",
                edit("# director\n", "# director\nscript_user = '''\n[[virtual_server]]\n'''\n"),
                None,
            ),
            (
                "an indented header",
                edit(second_header, "\n  [[virtual_server]]\nvip = '192.0.2.2'"),
                Some(1),
            ),
            (
                "a header with a comment",
                edit(second_header, "\n[[virtual_server]] # web\nvip = '192.0.2.2'"),
                Some(2),
            ),
            (
                "a header followed by garbage",
                edit(second_header, "\n[[virtual_server]]]\nvip = '192.0.2.2'"),
                None,
            ),
            ("services defined in the head", format!("virtual_server = []\n{BASE}"), None),
            ("a section after the services", format!("{BASE}[bgp]\nlocal_as = 65001\n"), None),
            (
                "a dotted key of a service",
                edit("port = 443\n", "port = 443\nvirtual_server.x = 1\n"),
                None,
            ),
            (
                "a table of a service written twice",
                edit(
                    "[virtual_server.sorry_server]\n",
                    "[virtual_server.sorry_server]\naddress = '198.51.100.98'\n[virtual_server.sorry_server]\n",
                ),
                None,
            ),
            ("CRLF line ends", BASE.replace('\n', "\r\n"), Some(0)),
            ("no services", BASE[..b[0]].to_owned(), Some(0)),
            ("empty", String::new(), Some(0)),
        ];
        let source = Path::new("lb.toml");
        for (name, text, reused) in cases {
            let mut memo = ParseMemo::default();
            let base = parse_toml_reusing(BASE, source, &FakeHost, &mut memo);
            assert!(
                base.is_ok() && memo.reused() == 0 && memo.blocks.len() == 3,
                "{name}: {base:?} {memo:?}"
            );
            let whole = shown(parse_toml(&text, source, &FakeHost));
            let memo_before = format!("{memo:?}");
            let in_parts = parse(&text, source, &mut memo);
            match reused {
                Some(n) => {
                    assert!(in_parts.is_some(), "{name}: the whole file was read");
                    assert_eq!(memo.reused(), n, "{name}: blocks reused");
                }
                None => {
                    assert!(in_parts.is_none(), "{name}: read in parts");
                    assert_eq!(format!("{memo:?}"), memo_before, "{name}: the memo changed");
                }
            }
            let mut memo = ParseMemo::default();
            parse_toml_reusing(BASE, source, &FakeHost, &mut memo).unwrap();
            let through_memo = shown(parse_toml_reusing(&text, source, &FakeHost, &mut memo));
            assert_eq!(through_memo, whole, "{name}");
            // Read once more: every block from the memo when the parts read alone, alike.
            let again = shown(parse_toml_reusing(&text, source, &FakeHost, &mut memo));
            assert_eq!(again, whole, "{name}: read again");
            let all = if reused.is_some() { memo.blocks.len() } else { 0 };
            assert_eq!(memo.reused(), all, "{name}: read again");
        }
    }

    /// A chain of random line edits (a fixed seed), each read through the memo the edits before
    /// left: every reading equals the whole file's, whether the memo's last read was in parts or
    /// not. The lines include ones that break the split (a header in a string, an indented
    /// header, a section after the services, a dotted `virtual_server` key, garbage).
    #[test]
    fn a_chain_of_random_edits_reads_as_the_whole_file() {
        const LINES: &[&str] = &[
            "[[virtual_server]]",
            "vip = '192.0.2.7'",
            "port = 8080",
            "interface = 'eth0'",
            "[[virtual_server.real_server]]",
            "address = '198.51.100.77'",
            "weight = 9",
            "",
            "# comment",
            "  [[virtual_server]]",
            "[[virtual_server]] # c",
            "script_user = '''",
            "'''",
            "[bgp]",
            "virtual_server.x = 1",
            "[virtual_server.sorry_server]",
            "max_services = 70",
            "port = ",
        ];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % n
        };
        let source = Path::new("lb.toml");
        let mut memo = ParseMemo::default();
        let mut lines: Vec<String> = BASE.lines().map(str::to_owned).collect();
        let (mut in_parts, mut reused) = (0, 0);
        for step in 0..300 {
            let at = next(lines.len() + 1);
            match next(4) {
                0 if at < lines.len() => drop(lines.remove(at)),
                1 => lines.insert(at, LINES[next(LINES.len())].to_owned()),
                2 if at < lines.len() => lines[at] = LINES[next(LINES.len())].to_owned(),
                // Back to the start now and then, so that the chain reads in parts often.
                _ => lines = BASE.lines().map(str::to_owned).collect(),
            }
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let whole = shown(parse_toml(&text, source, &FakeHost));
            let through_memo = shown(parse_toml_reusing(&text, source, &FakeHost, &mut memo));
            assert_eq!(through_memo, whole, "step {step}:\n{text}");
            if memo.text == text {
                in_parts += 1;
            }
            reused += memo.reused();
        }
        // The chain must have taken both ways and reused blocks.
        assert!(in_parts > 30 && in_parts < 290 && reused > 100, "{in_parts} {reused}");
    }

    #[test]
    fn split_finds_the_header_lines() {
        let text = "a = 1\n[[virtual_server]]\nx = 1\n [[virtual_server]]\n[[virtual_server]]";
        let (head, blocks) = split(text);
        assert_eq!(&text[head], "a = 1\n");
        let parts: Vec<(usize, &str)> = blocks.into_iter().map(|(l, r)| (l, &text[r])).collect();
        assert_eq!(
            parts,
            [(1, "[[virtual_server]]\nx = 1\n [[virtual_server]]\n"), (4, "[[virtual_server]]")]
        );
    }
}
