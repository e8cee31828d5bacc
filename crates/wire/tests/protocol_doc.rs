//! Keeps `docs/PROTOCOL.md` equal to the code on the numbers an implementer in another language
//! relies on: every protocol's size limit and every error code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tpod_wire::{codec::PROTOCOL_LIMITS, codes};

/// Included at compile time, so that editing the page rebuilds this test.
const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

/// The cells of the table rows of the page: lines starting with `|`, split on `|` and trimmed.
fn rows() -> Vec<Vec<&'static str>> {
    DOC.lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn every_protocol_is_documented_with_its_limit_in_bytes() {
    let rows = rows();
    for (protocol, limit) in PROTOCOL_LIMITS {
        let id = format!("`{protocol}`");
        let row = rows
            .iter()
            .find(|cells| cells.len() >= 4 && cells[0] == id)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no row for {protocol} in the limits table"));
        // The limit column starts with the exact number of bytes, e.g. "65536 (64 KiB)".
        let documented = row[3].split_whitespace().next().unwrap_or_default();
        assert_eq!(documented, limit.to_string(), "docs/PROTOCOL.md gives {protocol} the limit {:?}", row[3]);
    }
}

#[test]
fn every_error_code_is_documented_and_no_other() {
    let documented: Vec<(u32, &str)> = rows()
        .into_iter()
        .filter_map(|cells| Some((cells.first()?.parse().ok()?, *cells.get(1)?)))
        .filter(|(code, _): &(u32, &str)| (400..600).contains(code))
        .collect();
    assert_eq!(documented, codes::ALL, "the codes table of docs/PROTOCOL.md differs from tpod_wire::codes::ALL");
}

#[test]
fn the_protocol_version_is_documented() {
    let version = format!("version **{}**", tpod_wire::VERSION);
    assert!(DOC.contains(&version), "docs/PROTOCOL.md should say the message version is {}", tpod_wire::VERSION);
}
