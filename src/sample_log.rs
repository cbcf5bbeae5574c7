//! The timeline's samples as a run keeps them: each encoded compactly (postcard) as it
//! arrives and, past [`SPILL_BYTES`] in memory, appended to an unlinked temporary file, so a
//! long run that keeps its timeline (`--json`, `--plot`) holds a bounded amount of it in
//! memory and the rest on disk. Read back in order, once or many times. Owns no meaning of a
//! sample (that is `profile.rs`'s); nothing outlives the process (the file has no name).

use crate::profile::TimelineSample;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Encoded samples held in memory before they are appended to the spill file.
const SPILL_BYTES: usize = 1 << 18;

/// Bytes read from the spill file at once when reading samples back.
const READ_CHUNK: usize = 1 << 16;

/// The samples of a timeline, in the order they were pushed.
#[derive(Debug, Default)]
pub struct SampleLog {
    /// Encoded samples not spilled yet: each a little-endian `u32` length, then its bytes.
    pending: Vec<u8>,
    /// The spill file (unlinked) and how many bytes it holds.
    spill: Option<(File, u64)>,
    /// Spilling failed (the file could not be made or written): from then on every sample
    /// stays in memory.
    spill_failed: bool,
    len: usize,
}

impl SampleLog {
    /// An empty log.
    pub fn new() -> SampleLog {
        SampleLog::default()
    }

    /// How many samples it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `sample`.
    pub fn push(&mut self, sample: &TimelineSample) {
        let at = self.pending.len();
        self.pending.extend_from_slice(&[0; 4]);
        // Encoding into a Vec cannot fail: every field is a plain number or a sequence.
        if postcard::to_io(sample, &mut self.pending).is_err() {
            self.pending.truncate(at);
            return;
        }
        let length = (self.pending.len() - at - 4) as u32;
        self.pending[at..at + 4].copy_from_slice(&length.to_le_bytes());
        self.len += 1;
        if self.pending.len() >= SPILL_BYTES && !self.spill_failed {
            self.spill_pending();
        }
    }

    /// Appends the pending bytes to the spill file (made on first use).
    fn spill_pending(&mut self) {
        let written = (|| -> std::io::Result<()> {
            if self.spill.is_none() {
                self.spill = Some((tempfile::tempfile()?, 0));
            }
            if let Some((file, size)) = &mut self.spill {
                file.write_all_at(&self.pending, *size)?;
                *size += self.pending.len() as u64;
            }
            Ok(())
        })();
        match written {
            Ok(()) => self.pending.clear(),
            Err(err) => {
                eprintln!(
                    "pmt-sample: warning: cannot spill the timeline to a temporary file ({err}): \
                     it is kept in memory from now on; point TMPDIR at a writable directory with room"
                );
                self.spill_failed = true;
            }
        }
    }

    /// Every sample, in order.
    pub fn iter(&self) -> SampleLogIter<'_> {
        SampleLogIter {
            log: self,
            file_at: 0,
            chunk: Vec::new(),
            chunk_at: 0,
            pending_at: 0,
            failed: false,
        }
    }
}

/// Two logs are equal when they hold the same samples in the same order (wherever kept).
impl PartialEq for SampleLog {
    fn eq(&self, other: &SampleLog) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl FromIterator<TimelineSample> for SampleLog {
    fn from_iter<I: IntoIterator<Item = TimelineSample>>(samples: I) -> SampleLog {
        let mut log = SampleLog::new();
        log.extend(samples);
        log
    }
}

impl Extend<TimelineSample> for SampleLog {
    fn extend<I: IntoIterator<Item = TimelineSample>>(&mut self, samples: I) {
        for sample in samples {
            self.push(&sample);
        }
    }
}

/// The samples of a [`SampleLog`], spilled ones first. A spill file that cannot be read
/// back ends the iteration early, with a warning line saying so.
pub struct SampleLogIter<'a> {
    log: &'a SampleLog,
    /// Where in the spill file the next chunk starts.
    file_at: u64,
    /// Bytes read from the spill file and not decoded yet, from `chunk_at` on.
    chunk: Vec<u8>,
    chunk_at: usize,
    /// Where in the pending bytes the next sample starts.
    pending_at: usize,
    /// The spill file could not be read back: the iteration has ended.
    failed: bool,
}

impl SampleLogIter<'_> {
    /// The next record of the spill file, reading more of it when needed.
    fn next_spilled(&mut self) -> Option<TimelineSample> {
        if self.failed {
            return None;
        }
        let (file, size) = self.log.spill.as_ref()?;
        loop {
            let held = &self.chunk[self.chunk_at..];
            if let Some((sample, used)) = decode(held) {
                self.chunk_at += used;
                return Some(sample);
            }
            if self.file_at >= *size {
                return None;
            }
            // Keep the partial record, then read the next chunk (at least a whole record).
            self.chunk.drain(..self.chunk_at);
            self.chunk_at = 0;
            let need = record_length(&self.chunk).map_or(READ_CHUNK, |n| n.max(READ_CHUNK));
            let want = need.min((*size - self.file_at) as usize);
            let start = self.chunk.len();
            self.chunk.resize(start + want, 0);
            if let Err(err) = file.read_exact_at(&mut self.chunk[start..], self.file_at) {
                eprintln!(
                    "pmt-sample: warning: cannot read the timeline's temporary file back ({err}): \
                     the timeline written ends early"
                );
                self.failed = true;
                return None;
            }
            self.file_at += want as u64;
        }
    }
}

impl Iterator for SampleLogIter<'_> {
    type Item = TimelineSample;

    fn next(&mut self) -> Option<TimelineSample> {
        if let Some(sample) = self.next_spilled() {
            return Some(sample);
        }
        // A spill file that could not be read back ends the samples there.
        if self.failed {
            return None;
        }
        let (sample, used) = decode(&self.log.pending[self.pending_at..])?;
        self.pending_at += used;
        Some(sample)
    }
}

/// The length of the record that starts `bytes` (its 4-byte length prefix included), if the
/// prefix is there.
fn record_length(bytes: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(4 + u32::from_le_bytes(prefix) as usize)
}

/// The sample that starts `bytes` and the bytes it took, if it is there whole.
fn decode(bytes: &[u8]) -> Option<(TimelineSample, usize)> {
    let length = record_length(bytes)?;
    let record = bytes.get(4..length)?;
    let sample = postcard::from_bytes(record).ok()?;
    Some((sample, length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::TimelineEntry;
    use crate::sample::MetricValues;

    fn sample(i: u32) -> TimelineSample {
        let mut values = MetricValues::default();
        values.0[0] = u64::from(i) * 4096;
        values.0[1] = u64::MAX - u64::from(i);
        TimelineSample {
            time_s: f64::from(i) * 0.01,
            process: (!i.is_multiple_of(3)).then_some(i % 7),
            rss: (!i.is_multiple_of(5)).then_some(u64::from(i) << 20),
            entries: (0..i % 4)
                .map(|t| TimelineEntry {
                    thread: t,
                    stack: i * 3 + t,
                    values,
                })
                .collect(),
        }
    }

    #[test]
    fn samples_come_back_in_order_from_memory_and_from_the_spill_file() {
        let mut log = SampleLog::new();
        // Enough to spill several times over (each sample is tens of bytes).
        let count = 120_000;
        for i in 0..count {
            log.push(&sample(i));
        }
        assert_eq!(log.len(), count as usize);
        assert!(log.spill.is_some(), "it spilled");
        assert!(log.pending.capacity() <= 2 * SPILL_BYTES);
        for pass in 0..2 {
            let mut n = 0;
            for (i, back) in log.iter().enumerate() {
                assert_eq!(back, sample(i as u32), "pass {pass}, sample {i}");
                n += 1;
            }
            assert_eq!(n, count as usize, "pass {pass}");
        }
    }

    #[test]
    fn a_short_log_stays_in_memory() {
        let mut log = SampleLog::new();
        log.extend((0..10).map(sample));
        assert!(log.spill.is_none());
        assert_eq!(
            log.iter().collect::<Vec<_>>(),
            (0..10).map(sample).collect::<Vec<_>>()
        );
    }
}
