//! Allocation-light lookup structures built at load time: a concatenated byte
//! table and an open-addressing piece -> id index (no per-piece allocation).

use std::hash::Hasher;

/// Many byte strings stored back to back.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByteTable {
    data: Vec<u8>,
    /// `offs[i]..offs[i + 1]` is entry i.
    offs: Vec<u32>,
}

impl ByteTable {
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        let mut offs = Vec::with_capacity(n + 1);
        offs.push(0);
        ByteTable {
            data: Vec::with_capacity(bytes),
            offs,
        }
    }

    pub fn push(&mut self, b: &[u8]) {
        if self.offs.is_empty() {
            self.offs.push(0);
        }
        self.data.extend_from_slice(b);
        // Total sizes are bounded by the (in-memory) input, far below 4 GiB for
        // any real vocabulary; saturate rather than wrap for absurd inputs.
        self.offs
            .push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
    }

    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        match (self.offs.get(i), self.offs.get(i + 1)) {
            (Some(&a), Some(&b)) => self.data.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.offs.len().saturating_sub(1)
    }

    pub fn total_bytes(&self) -> usize {
        self.data.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl<T: AsRef<[u8]>> FromIterator<T> for ByteTable {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut t = ByteTable::with_capacity(0, 0);
        for x in iter {
            t.push(x.as_ref());
        }
        t
    }
}

#[inline]
fn hash(key: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(key);
    h.write_usize(key.len());
    h.finish()
}

const EMPTY: u32 = u32::MAX;

/// Byte string -> id map; the first insertion of a key wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct PieceIndex {
    keys: ByteTable,
    ids: Vec<u32>,
    /// (hash high bits, entry index) per slot; entry EMPTY = free.
    slots: Vec<(u32, u32)>,
}

impl PieceIndex {
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        let cap = (n.max(4) * 2).next_power_of_two();
        PieceIndex {
            keys: ByteTable::with_capacity(n, bytes),
            ids: Vec::with_capacity(n),
            slots: vec![(0, EMPTY); cap],
        }
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(8);
        let mut slots = vec![(0u32, EMPTY); cap];
        let mask = cap - 1;
        for e in 0..self.ids.len() {
            let h = hash(self.keys.get(e));
            let mut s = h as usize & mask;
            while slots[s].1 != EMPTY {
                s = (s + 1) & mask;
            }
            slots[s] = ((h >> 32) as u32, e as u32);
        }
        self.slots = slots;
    }

    /// Inserts unless the key is present; returns whether it was inserted.
    pub fn insert(&mut self, key: &[u8], id: u32) -> bool {
        if (self.ids.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let h = hash(key);
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut s = h as usize & mask;
        loop {
            let (t, e) = self.slots[s];
            if e == EMPTY {
                break;
            }
            if t == tag && self.keys.get(e as usize) == key {
                return false;
            }
            s = (s + 1) & mask;
        }
        self.slots[s] = (tag, self.ids.len() as u32);
        self.keys.push(key);
        self.ids.push(id);
        true
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        let h = hash(key);
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut s = h as usize & mask;
        loop {
            let (t, e) = self.slots[s];
            if e == EMPTY {
                return None;
            }
            if t == tag && self.keys.get(e as usize) == key {
                return Some(self.ids[e as usize]);
            }
            s = (s + 1) & mask;
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.keys.len()).map(|i| self.keys.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_basics() {
        let mut ix = PieceIndex::with_capacity(2, 8);
        for i in 0..1000u32 {
            assert!(ix.insert(i.to_string().as_bytes(), i));
        }
        assert!(!ix.insert(b"5", 99));
        for i in 0..1000u32 {
            assert_eq!(ix.get(i.to_string().as_bytes()), Some(i));
        }
        assert_eq!(ix.get(b"x"), None);
        assert_eq!(ix.get(b""), None);
        let mut t = ByteTable::default();
        t.push(b"ab");
        t.push(b"");
        t.push(b"c");
        assert_eq!(
            (t.get(0), t.get(1), t.get(2), t.get(3)),
            (&b"ab"[..], &b""[..], &b"c"[..], &b""[..])
        );
    }
}
