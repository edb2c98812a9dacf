//! Typed messages between the runtime (`create`) and the container's init over a socket pair,
//! one JSON object per line. An unexpected message is an error value, never a guess.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading or writing the socket failed.
    #[error("sync with container init: {0}")]
    Io(#[from] std::io::Error),
    /// The other side closed the channel.
    #[error("the container init exited before it reported back")]
    Closed,
    /// A line was not a message.
    #[error("sync with container init: malformed message {line:?}")]
    Malformed {
        /// The line.
        line: String,
    },
    /// A message came that this step does not expect.
    #[error("sync with container init: expected {expected}, got {got:?}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: Message,
    },
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    /// Runtime to init: the init is in its cgroup; go on.
    Go,
    /// Init to runtime: the user namespace exists; write its id maps.
    NeedIdMaps,
    /// Runtime to init: the id maps are written.
    IdMapsWritten,
    /// Init to runtime: the init's pid on the host.
    InitPid {
        /// The pid.
        pid: i32,
    },
    /// Init to runtime: the container's namespaces and mounts exist; run the prestart and
    /// createRuntime hooks and send the state the init's own hooks get.
    NeedHooks,
    /// Runtime to init: the runtime's hooks ran; the state JSON for the init's hooks.
    HooksDone {
        /// The state JSON.
        state: String,
    },
    /// Init to runtime: the seccomp filter is loaded and its listener is descriptor `fd` of
    /// the process; take a copy (`pidfd_getfd`) for the seccomp agent.
    SeccompListener {
        /// The descriptor's number in the process.
        fd: i32,
    },
    /// Runtime to init: the listener is copied; go on.
    SeccompDone,
    /// Init to runtime: everything is set up; the init now waits for `start`.
    Ready,
    /// Init to runtime: setting up failed.
    Failed {
        /// What failed, for the user.
        message: String,
    },
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    /// A connected pair: the runtime's end and the init's end.
    pub fn pair() -> Result<(Channel, Channel), SyncError> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel::new(a)?, Channel::new(b)?))
    }

    fn new(stream: UnixStream) -> Result<Channel, SyncError> {
        Ok(Channel {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one message.
    pub fn send(&mut self, message: &Message) -> Result<(), SyncError> {
        let mut line = serde_json::to_string(message).map_err(|e| SyncError::Malformed {
            line: e.to_string(),
        })?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Receives one message.
    pub fn recv(&mut self) -> Result<Message, SyncError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(SyncError::Closed);
        }
        serde_json::from_str(line.trim_end()).map_err(|_| SyncError::Malformed { line })
    }

    /// Receives one message and checks it is `expected`.
    pub fn expect(&mut self, expected: &Message, name: &'static str) -> Result<(), SyncError> {
        let got = self.recv()?;
        if &got == expected {
            Ok(())
        } else {
            Err(SyncError::Unexpected {
                expected: name,
                got,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_the_pair_in_order() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&Message::Go).unwrap();
        a.send(&Message::InitPid { pid: 42 }).unwrap();
        b.expect(&Message::Go, "go").unwrap();
        assert_eq!(b.recv().unwrap(), Message::InitPid { pid: 42 });
    }

    #[test]
    fn an_unexpected_message_is_an_error() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&Message::Ready).unwrap();
        assert!(matches!(
            b.expect(&Message::Go, "go"),
            Err(SyncError::Unexpected { .. })
        ));
    }

    #[test]
    fn a_closed_peer_is_reported() {
        let (a, mut b) = Channel::pair().unwrap();
        drop(a);
        assert!(matches!(b.recv(), Err(SyncError::Closed)));
    }
}
