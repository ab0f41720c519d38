//! journald's native protocol: one datagram per entry to
//! `/run/systemd/journal/socket`, each field `KEY=value\n`, or, for a value
//! holding a line feed, `KEY\n` + its length (64-bit little-endian) + the
//! bytes + `\n`. Values are bounded, so an entry always fits one datagram
//! (no memfd needed).

/// Bytes of one field value kept; the rest is dropped. Above the longest
/// line a caller can make (every item bounded, escaped at worst), so that
/// MESSAGE always ends with its `peer_uid`; far below a datagram's limit.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// The fields of one journal entry.
#[derive(Debug, Clone, Default)]
pub struct Entry(Vec<u8>);

impl Entry {
    /// Add `KEY=value`; `key` is one of ours (upper case, digits, `_`).
    pub fn field(mut self, key: &str, value: &str) -> Entry {
        let value = truncate(value, MAX_FIELD_BYTES);
        self.0.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            self.0.push(b'\n');
            self.0.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.0.push(b'=');
        }
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'\n');
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The fields of a datagram, as journald reads them: (key, value bytes).
pub fn parse(mut data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n' || b == b'=')?;
        let key = String::from_utf8(data[..end].to_vec()).ok()?;
        if data[end] == b'=' {
            let rest = &data[end + 1..];
            let line_end = rest.iter().position(|&b| b == b'\n')?;
            fields.push((key, rest[..line_end].to_vec()));
            data = &rest[line_end + 1..];
        } else {
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let value = rest.get(8..8 + len)?;
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            fields.push((key, value.to_vec()));
            data = &rest[8 + len + 1..];
        }
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_line_feeds_are_length_prefixed() {
        let entry = Entry::default().field("MESSAGE", "one line").field("MFA_USER", "eve\nMFA_OUTCOME=success");
        let mut expected = b"MESSAGE=one line\nMFA_USER\n".to_vec();
        expected.extend_from_slice(&23u64.to_le_bytes());
        expected.extend_from_slice(b"eve\nMFA_OUTCOME=success\n");
        assert_eq!(entry.bytes(), expected.as_slice());
        let fields = parse(entry.bytes()).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1], ("MFA_USER".to_string(), b"eve\nMFA_OUTCOME=success".to_vec()));
    }

    #[test]
    fn values_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES);
        let entry = Entry::default().field("MFA_REASON", &long);
        let fields = parse(entry.bytes()).unwrap();
        assert_eq!(fields[0].1.len(), MAX_FIELD_BYTES);
        assert!(String::from_utf8(fields[0].1.clone()).is_ok());
    }
}
