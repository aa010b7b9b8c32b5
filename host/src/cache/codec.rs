//! A small length-prefixed encoding for cached values: numbers little-endian, byte strings
//! with a u32 length. Reading checks every length, so damaged bytes give an error, never a
//! wrong value.

/// Builds an encoded value.
#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    pub fn new() -> Self {
        Writer(Vec::new())
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0
            .extend_from_slice(&v[..v.len().min(u32::MAX as usize)]);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// The value could not be decoded: it was damaged or written by another format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged cache entry: {0}")]
pub struct Damaged(pub &'static str);

/// Reads an encoded value front to back.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        if self.0.len() < n {
            return Err(Damaged("it ends too early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Damaged> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Damaged> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Damaged> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Damaged> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Damaged> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String, Damaged> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Damaged("a text is not UTF-8"))
    }

    /// Everything has been read: trailing bytes mean the value is not what it claims.
    pub fn end(&self) -> Result<(), Damaged> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Damaged("it has bytes left over"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_and_a_cut_value_is_an_error() {
        let bytes = Writer::new()
            .u8(7)
            .u16(300)
            .u64(1 << 40)
            .bytes(b"hello")
            .finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(300));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.string().as_deref(), Ok("hello"));
        assert!(r.end().is_ok());
        let cut = &bytes[..bytes.len() - 1];
        let mut r = Reader::new(cut);
        r.u8().unwrap();
        r.u16().unwrap();
        r.u64().unwrap();
        assert!(r.bytes().is_err());
    }
}
