//! A tag's events (`tags.events`, schema v7): the `tag_added` and `tag_removed` events of one
//! tag of one customer, in the order they were recorded, 17 bytes each: the instant and the
//! event id (i64, little-endian), then 1 for added or 0 for removed. The tag itself is the
//! row's, and the events' only property (`{"tag": …}`) is made from it when they are read.

use std::sync::OnceLock;

use super::StoreError;
use crate::eval;

const ENTRY: usize = 17;

/// One tag event as stored with its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TagEvent {
    pub at: i64,
    pub id: i64,
    pub added: bool,
}

impl TagEvent {
    pub fn encode(&self) -> [u8; ENTRY] {
        let mut bytes = [0; ENTRY];
        bytes[..8].copy_from_slice(&self.at.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.id.to_le_bytes());
        bytes[16] = u8::from(self.added);
        bytes
    }

    pub fn name(&self) -> &'static str {
        match self.added {
            true => "tag_added",
            false => "tag_removed",
        }
    }

    /// The event's name as evaluation holds it.
    pub fn eval_name(&self) -> eval::Name {
        static NAMES: OnceLock<[eval::Name; 2]> = OnceLock::new();
        let [removed, added] =
            NAMES.get_or_init(|| [eval::Name::new("tag_removed"), eval::Name::new("tag_added")]);
        match self.added {
            true => *added,
            false => *removed,
        }
    }
}

/// The events of a tag's stored `events`, in the order recorded: mostly time order, but an
/// import may date a change before an earlier one, so readers put them in (time, id) order.
pub(super) fn decode(bytes: &[u8]) -> impl Iterator<Item = Result<TagEvent, StoreError>> + '_ {
    let whole = bytes.len() / ENTRY * ENTRY;
    let damaged = (whole != bytes.len()).then(|| {
        Err(StoreError::Damaged(format!(
            "a tag's events take {} bytes, not a multiple of {ENTRY}",
            bytes.len()
        )))
    });
    bytes[..whole]
        .chunks_exact(ENTRY)
        .map(|entry| {
            let word = |range: std::ops::Range<usize>| {
                i64::from_le_bytes(entry[range].try_into().expect("8 bytes"))
            };
            match entry[16] {
                0 | 1 => Ok(TagEvent {
                    at: word(0..8),
                    id: word(8..16),
                    added: entry[16] == 1,
                }),
                kind => Err(StoreError::Damaged(format!(
                    "a tag event of kind {kind}, neither added (1) nor removed (0)"
                ))),
            }
        })
        .chain(damaged)
}

/// Writes the properties of an event of `tag` (`{"tag":"…"}`, as JSON text) into `out`.
pub(super) fn properties_into(tag: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"tag\":");
    serde_json::to_writer(&mut *out, tag).expect("strings serialize");
    out.push(b'}');
}

/// The properties of an event of `tag`, as JSON text.
pub(super) fn properties(tag: &str) -> String {
    let mut out = Vec::new();
    properties_into(tag, &mut out);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_events_decode_as_encoded() {
        let events = [
            TagEvent {
                at: -5,
                id: 1,
                added: true,
            },
            TagEvent {
                at: 1_780_000_000_000,
                id: i64::MAX,
                added: false,
            },
        ];
        let bytes: Vec<u8> = events.iter().flat_map(|e| e.encode()).collect();
        let decoded: Vec<TagEvent> = decode(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded, events);
        assert_eq!(decoded[0].name(), "tag_added");
        assert_eq!(&*decoded[1].eval_name(), "tag_removed");
    }

    #[test]
    fn damaged_tag_events_are_errors_not_panics() {
        let mut bytes = TagEvent {
            at: 1,
            id: 2,
            added: true,
        }
        .encode()
        .to_vec();
        assert!(decode(&bytes[..5]).any(|e| e.is_err()), "cut short");
        bytes[16] = 7;
        assert!(decode(&bytes).any(|e| e.is_err()), "unknown kind");
    }

    #[test]
    fn tag_event_properties_are_the_json_of_the_tag() {
        for tag in ["VIP", "高意向", "a \"quoted\" \\ tag"] {
            let text = properties(tag);
            assert_eq!(text, serde_json::json!({ "tag": tag }).to_string());
        }
    }
}
