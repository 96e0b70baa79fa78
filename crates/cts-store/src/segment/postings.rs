//! Posting lists: `count` ordinals, ascending, as varint deltas (the first
//! one whole). Decoded whole ([`decode_postings`]) or as far as a probe
//! needs ([`Cursor`]): a frequent value's list in a merged segment holds
//! hundreds of thousands of ordinals, and a page needs a few hundred.

use std::os::unix::fs::FileExt;

use super::Segment;
use crate::StoreError;

/// Decodes the ordinal at `bytes[*pos..]`, after `prev`. Any input gives an
/// error or an ordinal below `docs`, never a panic.
fn next_ordinal(
    bytes: &[u8],
    pos: &mut usize,
    prev: Option<u32>,
    docs: u32,
) -> Result<u32, &'static str> {
    let (mut cur, mut shift) = (0u32, 0u32);
    loop {
        let &byte = bytes
            .get(*pos)
            .ok_or("posting list does not hold its count of ordinals")?;
        *pos += 1;
        let part = (byte & 0x7f) as u32;
        if shift > 28 || (shift == 28 && part > 0x0f) {
            return Err("posting varint overflows 32 bits");
        }
        cur |= part << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let ordinal = match prev {
        None => cur,
        Some(p) => p.checked_add(cur).ok_or("posting ordinal overflows")?,
    };
    if ordinal >= docs {
        return Err("posting ordinal past the doc table");
    }
    Ok(ordinal)
}

/// Decodes a whole posting list of `count` ordinals, each below `docs`.
pub fn decode_postings(bytes: &[u8], count: u32, docs: u32) -> Result<Vec<u32>, &'static str> {
    if count as usize > bytes.len() {
        return Err("posting list shorter than its count");
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut pos = 0;
    while pos < bytes.len() {
        let ordinal = next_ordinal(bytes, &mut pos, out.last().copied(), docs)?;
        out.push(ordinal);
    }
    if out.len() != count as usize {
        return Err("posting list does not hold its count of ordinals");
    }
    Ok(out)
}

/// Bytes of a list read at a time.
const CHUNK: u64 = 4096;
/// The longest varint of a `u32`.
const MAX_VARINT: usize = 5;

/// A posting list of a segment, read and decoded as far as it is walked.
pub(super) struct Cursor<'a> {
    seg: &'a Segment,
    buf: Vec<u8>,
    pos: usize,
    /// File offsets of the list's next unread byte and of its end.
    at: u64,
    end: u64,
    /// Ordinals not decoded yet.
    left: u32,
    /// The ordinal the cursor is at: the last one decoded.
    head: Option<u32>,
}

impl<'a> Cursor<'a> {
    pub(super) fn single(seg: &'a Segment, ordinal: u32) -> Result<Cursor<'a>, StoreError> {
        let ordinal = seg.single(ordinal)?;
        Ok(Cursor {
            seg,
            buf: Vec::new(),
            pos: 0,
            at: 0,
            end: 0,
            left: 0,
            head: Some(ordinal),
        })
    }

    pub(super) fn list(
        seg: &'a Segment,
        at: u64,
        bytes: u32,
        count: u32,
    ) -> Result<Cursor<'a>, StoreError> {
        seg.check_list(at, bytes)?;
        let mut c = Cursor {
            seg,
            buf: Vec::new(),
            pos: 0,
            at,
            end: at + bytes as u64,
            left: count,
            head: None,
        };
        c.head = c.advance()?;
        Ok(c)
    }

    fn advance(&mut self) -> Result<Option<u32>, StoreError> {
        if self.left == 0 {
            return Ok(None);
        }
        if self.buf.len() - self.pos < MAX_VARINT && self.at < self.end {
            self.buf.drain(..self.pos);
            self.pos = 0;
            let n = (self.end - self.at).min(CHUNK) as usize;
            let old = self.buf.len();
            self.buf.resize(old + n, 0);
            let read = self.seg.file.read_exact_at(&mut self.buf[old..], self.at);
            self.seg.io(read)?;
            self.at += n as u64;
        }
        let docs = self.seg.meta.docs;
        let ordinal = next_ordinal(&self.buf, &mut self.pos, self.head, docs)
            .map_err(|d| self.seg.corrupt(d))?;
        self.left -= 1;
        Ok(Some(ordinal))
    }

    /// Moves to the first ordinal at or past `target`, if the list has one.
    pub(super) fn seek(&mut self, target: u32) -> Result<Option<u32>, StoreError> {
        while let Some(head) = self.head {
            if head >= target {
                return Ok(Some(head));
            }
            self.head = self.advance()?;
        }
        Ok(None)
    }
}
