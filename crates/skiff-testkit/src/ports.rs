//! Free loopback ports for throw-away servers.

use std::net::TcpListener;

use crate::{Result, TestkitError};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it (bind to port 0), so parallel tests do not collide; the small window
/// between this call and the server's own bind is accepted by every fixture that uses it.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(TestkitError::io("bind", "127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(TestkitError::io("read address of", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
