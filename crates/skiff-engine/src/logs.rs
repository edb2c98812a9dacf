//! Container logs in the CRI format the node agent serves to `kubectl logs`:
//! `2026-11-26T23:00:00.123456789Z stdout F the line` — one record per line of output, `P`
//! (partial) for pieces of a line longer than 16 KiB and for output that ends without a
//! newline, `F` for the piece that ends a line.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::EngineError;

/// The longest piece of a line one record holds.
pub const MAX_RECORD: usize = 16 * 1024;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends a container's output to its log file, line by line.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<LogWriter, EngineError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(EngineError::io("open", path))?;
        Ok(LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn slot(stream: Stream) -> usize {
        match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn record(&mut self, stream: Stream, tag: char, content: &[u8]) -> std::io::Result<()> {
        let mut line =
            format!("{} {} {tag} ", crate::time::now_rfc3339(), stream.as_str()).into_bytes();
        line.extend_from_slice(content);
        line.push(b'\n');
        self.file.write_all(&line)
    }

    /// Takes output read from `stream`: writes every complete line, and pieces of
    /// [`MAX_RECORD`] bytes of a longer one; keeps the rest for the next call.
    pub fn feed(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let slot = Self::slot(stream);
        let mut buffer = std::mem::take(&mut self.pending[slot]);
        buffer.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buffer[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut piece = start;
            while end - piece > MAX_RECORD {
                self.record(stream, 'P', &buffer[piece..piece + MAX_RECORD])?;
                piece += MAX_RECORD;
            }
            self.record(stream, 'F', &buffer[piece..end])?;
            start = end + 1;
        }
        while buffer.len() - start >= MAX_RECORD {
            self.record(stream, 'P', &buffer[start..start + MAX_RECORD])?;
            start += MAX_RECORD;
        }
        self.pending[slot] = buffer.split_off(start);
        Ok(())
    }

    /// The stream ended: writes what is left of its last line as a partial record.
    pub fn finish(&mut self, stream: Stream) -> std::io::Result<()> {
        let slot = Self::slot(stream);
        let rest = std::mem::take(&mut self.pending[slot]);
        if !rest.is_empty() {
            self.record(stream, 'P', &rest)?;
        }
        Ok(())
    }
}

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its timestamp, as written.
    pub time: String,
    /// Its stream.
    pub stream: Stream,
    /// Whether the line goes on in the next record of this stream.
    pub partial: bool,
    /// The bytes (without the newline).
    pub content: Vec<u8>,
}

/// Parses one line of a log file (without its newline).
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = String::from_utf8(fields.next()?.to_vec()).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = fields.next().unwrap_or_default().to_vec();
    Some(LogRecord {
        time,
        stream,
        partial,
        content,
    })
}

/// Reads a log file incrementally (for `logs -f`): each call returns the records completed
/// since the last one.
#[derive(Debug)]
pub struct LogReader {
    file: File,
    pending: Vec<u8>,
}

impl LogReader {
    /// Opens the log at `path` from its start.
    pub fn open(path: &Path) -> Result<LogReader, EngineError> {
        let file = File::open(path).map_err(EngineError::io("open", path))?;
        Ok(LogReader {
            file,
            pending: Vec::new(),
        })
    }

    /// The records written since the last call.
    pub fn read_new(&mut self) -> std::io::Result<Vec<LogRecord>> {
        let mut data = Vec::new();
        self.file.read_to_end(&mut data)?;
        self.pending.extend_from_slice(&data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            if let Some(record) = parse_record(&self.pending[start..start + pos]) {
                out.push(record);
            }
            start += pos + 1;
        }
        self.pending.drain(..start);
        Ok(out)
    }
}

/// Writes records to the user's stdout and stderr as `docker logs` does: the content, a
/// newline where a line ended, and with `timestamps` each line prefixed by its time.
#[derive(Debug, Default)]
pub struct LogPrinter {
    /// Prefix lines with their timestamps.
    pub timestamps: bool,
    mid_line: [bool; 2],
}

impl LogPrinter {
    /// A printer.
    pub fn new(timestamps: bool) -> LogPrinter {
        LogPrinter {
            timestamps,
            mid_line: [false, false],
        }
    }

    /// Prints one record to `out` or `err` by its stream.
    pub fn print(
        &mut self,
        record: &LogRecord,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> std::io::Result<()> {
        let slot = LogWriter::slot(record.stream);
        let target: &mut dyn Write = match record.stream {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        if self.timestamps && !self.mid_line[slot] {
            write!(target, "{} ", record.time)?;
        }
        target.write_all(&record.content)?;
        if !record.partial {
            target.write_all(b"\n")?;
        }
        self.mid_line[slot] = record.partial;
        Ok(())
    }
}

/// The records of the last `n` lines (a line is its partial records up to the one ending it).
pub fn tail(records: Vec<LogRecord>, n: usize) -> Vec<LogRecord> {
    let mut lines = 0;
    let mut cut = 0;
    for (i, record) in records.iter().enumerate().rev() {
        if !record.partial || i + 1 == records.len() {
            if lines == n {
                cut = i + 1;
                break;
            }
            lines += 1;
        }
    }
    records.into_iter().skip(cut).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(chunks: &[(Stream, &[u8])]) -> Vec<LogRecord> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut writer = LogWriter::open(&path).unwrap();
        for (stream, data) in chunks {
            writer.feed(*stream, data).unwrap();
        }
        writer.finish(Stream::Stdout).unwrap();
        writer.finish(Stream::Stderr).unwrap();
        LogReader::open(&path).unwrap().read_new().unwrap()
    }

    #[test]
    fn lines_become_full_records_across_reads() {
        let records = written(&[
            (Stream::Stdout, b"hel"),
            (Stream::Stdout, b"lo\nwor"),
            (Stream::Stderr, b"oops\n"),
            (Stream::Stdout, b"ld\n"),
        ]);
        let text: Vec<(&str, bool, &[u8])> = records
            .iter()
            .map(|r| (r.stream.as_str(), r.partial, r.content.as_slice()))
            .collect();
        assert_eq!(
            text,
            vec![
                ("stdout", false, &b"hello"[..]),
                ("stderr", false, &b"oops"[..]),
                ("stdout", false, &b"world"[..]),
            ]
        );
        assert!(records[0].time.ends_with('Z') && records[0].time.len() == 30);
    }

    #[test]
    fn long_lines_and_unterminated_output_are_partial() {
        let long = vec![b'x'; MAX_RECORD * 2 + 5];
        let mut data = long.clone();
        data.extend_from_slice(b"\nend");
        let records = written(&[(Stream::Stdout, &data)]);
        let tags: Vec<(bool, usize)> = records
            .iter()
            .map(|r| (r.partial, r.content.len()))
            .collect();
        assert_eq!(
            tags,
            vec![
                (true, MAX_RECORD),
                (true, MAX_RECORD),
                (false, 5),
                (true, 3)
            ]
        );
        let mut out = Vec::new();
        let mut printer = LogPrinter::new(false);
        for r in &records {
            printer.print(r, &mut out, &mut std::io::sink()).unwrap();
        }
        let mut expected = long;
        expected.extend_from_slice(b"\nend");
        assert_eq!(out, expected);
    }

    #[test]
    fn tail_counts_lines_and_timestamps_prefix_lines() {
        let records = written(&[(Stream::Stdout, b"a\nb\nc\n")]);
        let last = tail(records.clone(), 2);
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].content, b"b");
        assert_eq!(tail(records.clone(), 0).len(), 0);
        assert_eq!(tail(records.clone(), 10).len(), 3);
        let mut out = Vec::new();
        let mut printer = LogPrinter::new(true);
        printer
            .print(&records[0], &mut out, &mut std::io::sink())
            .unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, format!("{} a\n", records[0].time));
        assert!(parse_record(b"nonsense").is_none());
    }
}
