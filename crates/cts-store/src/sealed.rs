//! Small JSON files that carry their format version and a CRC of their
//! content: `{"format": N, "crc32": C, "body": {...}}`, where C is the
//! CRC-32 of the body as serialized. A hand edit or a flipped byte fails the
//! check instead of being believed. A file without `format` is format 1,
//! written before the check existed, and is read as it is.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format [`seal`] writes.
pub const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Sealed<T> {
    format: u32,
    crc32: u32,
    body: T,
}

/// The bytes of a sealed file holding `value`.
pub fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    let body = serde_json::to_vec(value).expect("store files serialize");
    serde_json::to_vec(&Sealed {
        format: FORMAT,
        crc32: crc32fast::hash(&body),
        body: value,
    })
    .expect("store files serialize")
}

/// Reads a sealed file (or a format 1 file); the error says what is wrong.
pub fn unseal<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Some(format) = value.get("format") else {
        return serde_json::from_value(value).map_err(|e| e.to_string());
    };
    if format.as_u64() != Some(FORMAT as u64) {
        return Err(format!(
            "format {format} is not one this version reads (it reads {FORMAT} and 1)"
        ));
    }
    let sealed: Sealed<T> = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&sealed.body).expect("store files serialize");
    let crc = crc32fast::hash(&body);
    if crc != sealed.crc32 {
        return Err(format!(
            "checksum mismatch (stored {:08x}, computed {crc:08x}): the file was edited or damaged",
            sealed.crc32
        ));
    }
    Ok(sealed.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        seq: u64,
        names: Vec<String>,
    }

    #[test]
    fn sealed_files_read_back_and_edits_are_refused() {
        let doc = Doc {
            seq: 2600,
            names: vec!["a".into()],
        };
        let bytes = seal(&doc);
        assert_eq!(unseal::<Doc>(&bytes).unwrap(), doc);
        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("2600", "5200");
        assert!(unseal::<Doc>(edited.as_bytes())
            .unwrap_err()
            .contains("checksum mismatch"));
        let legacy = br#"{"seq":1,"names":[]}"#;
        assert_eq!(unseal::<Doc>(legacy).unwrap().seq, 1);
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replace("\"format\":2", "\"format\":3");
        assert!(unseal::<Doc>(newer.as_bytes())
            .unwrap_err()
            .contains("format 3"));
    }
}
