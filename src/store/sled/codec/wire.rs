//! The pieces every format is built of: length-prefixed fields, written
//! with [`put_short`] and [`put_long`] and read back with a [`Reader`], a
//! cursor that turns truncation into [`StoreError::Corrupt`] instead of a
//! panic; and [`shared`], a stored value held without a copy.

use bytes::Bytes;

use crate::store::StoreError;

/// A stored value as `Bytes`, without copying it.
pub fn shared(value: sled::IVec) -> Bytes {
    Bytes::from_owner(value)
}

pub(super) fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Stream names and event types are bounded at the edge far below 64 KiB.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

pub(super) fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// A cursor over a record that turns truncation into [`StoreError::Corrupt`].
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(super) fn short(&self) -> StoreError {
        StoreError::Corrupt("record is truncated".into())
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.short());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// How many bytes are left to read.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, StoreError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| self.short())?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| self.short())?))
    }

    pub(super) fn short_str(&mut self) -> Result<&'a str, StoreError> {
        std::str::from_utf8(self.short_bytes()?)
            .map_err(|_| StoreError::Corrupt("record holds a non-UTF-8 name".into()))
    }

    pub(super) fn short_bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.take(2)?;
        let len = u16::from_be_bytes([len[0], len[1]]);
        self.take(usize::from(len))
    }

    pub(super) fn long_bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        self.take(len as usize)
    }
}
