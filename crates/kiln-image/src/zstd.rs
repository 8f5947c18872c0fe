//! A zstd stream of any number of frames as one `Read`, as `zstd -d` reads it.
//!
//! ruzstd's own streaming decoder stops after the first frame; zstd:chunked layers compress every
//! file in a frame of its own and keep their table of contents in skippable frames.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

pub(crate) struct ZstdFrames<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    pub fn new(source: R) -> Self {
        Self {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                if self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(io::Error::other)?;
                    continue;
                }
                if self.decoder.can_collect() > 0 {
                    return self.decoder.read(buf);
                }
                self.in_frame = false;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = io::copy(&mut (&mut self.source).take(u64::from(length)), &mut io::sink())?;
                    if skipped < u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd skippable frame cut short",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ruzstd::encoding::{CompressionLevel, compress_to_vec};

    use super::*;

    #[test]
    fn reads_every_frame_and_skips_skippable_ones() -> io::Result<()> {
        let first: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let second = b"the second frame".repeat(1000);
        let mut stream = compress_to_vec(&first[..], CompressionLevel::Fastest);
        // A skippable frame (magic 0x184D2A50..5F, then a length), as zstd:chunked writes its table of contents.
        stream.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(compress_to_vec(&second[..], CompressionLevel::Fastest));

        let mut decoded = Vec::new();
        ZstdFrames::new(&stream[..]).read_to_end(&mut decoded)?;
        assert_eq!(decoded.len(), first.len() + second.len());
        assert!(decoded[..first.len()] == first[..] && decoded[first.len()..] == second[..]);
        Ok(())
    }

    #[test]
    fn corrupt_or_cut_streams_are_errors() {
        let stream = compress_to_vec(&b"hello hello hello"[..], CompressionLevel::Fastest);
        let mut out = Vec::new();
        assert!(
            ZstdFrames::new(&stream[..stream.len() - 3])
                .read_to_end(&mut out)
                .is_err()
        );
        let mut garbage = vec![0x28, 0xb5, 0x2f, 0xfd];
        garbage.extend_from_slice(&[0xff; 32]);
        assert!(ZstdFrames::new(&garbage[..]).read_to_end(&mut out).is_err());
    }
}
