//! The token server of [`RegistryAuth::Token`](super::RegistryAuth::Token): the "authorization
//! server" of the Docker registry token protocol, small enough for a test.
//!
//! It listens on its own 127.0.0.1 port (picked by the kernel) and serves
//! `GET /token?service=...&scope=TYPE:NAME:ACTIONS` (any number of `scope` parameters, each
//! possibly holding several space-separated scopes) from a background thread, one short-lived
//! thread per connection. Valid Basic credentials of the fixture user get every requested
//! action, no credentials get `pull` on repositories only (anonymous pull), anything else gets
//! 401. The tokens are ES256 JWTs whose `x5c` header carries the self-signed certificate the
//! registry trusts (`auth.token.rootcertbundle`). Every request is logged, one line each, to
//! the log file given at start. Dropping the server closes its port and joins its thread.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

use super::http::{Request, parse_basic_authorization, respond};
use crate::{Result, TestkitError};

/// The `service` the registry names in its challenge and expects as the tokens' audience.
pub const TOKEN_SERVICE: &str = "skiff-test-registry";
/// The issuer (`iss`) of the tokens, as the registry's `auth.token.issuer` expects it.
pub const TOKEN_ISSUER: &str = "skiff-testkit";
/// How long a token is valid, in seconds.
const TOKEN_LIFETIME: u64 = 300;
/// How long a connection may stall before the server gives up on it.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

fn invalid(detail: String) -> TestkitError {
    TestkitError::Invalid {
        fixture: "registry token server",
        detail,
    }
}

/// A running token server; stopped (port closed, thread joined) on drop.
#[derive(Debug)]
pub(crate) struct TokenServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Generates the signing key and its self-signed certificate, writes the certificate (PEM)
    /// to `cert_path`, binds a free loopback port and starts serving. Only `user`/`password`
    /// are valid credentials.
    pub(crate) fn start(
        cert_path: &Path,
        log_path: &Path,
        user: &str,
        password: &str,
    ) -> Result<TokenServer> {
        let (signer, cert_pem) = Signer::generate()?;
        std::fs::write(cert_path, cert_pem).map_err(TestkitError::io("write", cert_path))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(TestkitError::io("bind", "127.0.0.1:0"))?;
        let addr = listener
            .local_addr()
            .map_err(TestkitError::io("read address of", "127.0.0.1:0"))?;
        let state = Arc::new(State {
            signer,
            user: user.to_string(),
            password: password.to_string(),
            log_path: log_path.to_path_buf(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("token-server-{}", addr.port()))
                .spawn(move || serve(&listener, &stop, &state))
                .map_err(|source| TestkitError::Spawn {
                    program: "token server thread".to_string(),
                    source,
                })?
        };
        Ok(TokenServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The server's address, `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The realm URL the registry sends clients to: `http://127.0.0.1:PORT/token`.
    pub(crate) fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag; if even that fails the thread
        // is left behind rather than waiting for it forever.
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(thread) = self.thread.take()
            && woken
        {
            let _ = thread.join();
        }
    }
}

/// What every connection handler needs.
struct State {
    signer: Signer,
    user: String,
    password: String,
    log_path: PathBuf,
}

impl State {
    fn log(&self, line: &str) {
        if let Ok(mut file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool, state: &Arc<State>) {
    for incoming in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = incoming else { continue };
        let state = Arc::clone(state);
        // A handler that cannot be started drops its connection; the client sees that.
        let _ = std::thread::Builder::new()
            .name("token-request".to_string())
            .spawn(move || handle(stream, &state));
    }
}

fn handle(mut stream: TcpStream, state: &State) {
    if stream.set_read_timeout(Some(CONNECTION_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(CONNECTION_TIMEOUT)).is_err()
    {
        return;
    }
    let Some(request) = Request::read(&mut stream) else {
        return;
    };
    let (status, headers, body) = answer(&request, state, now());
    state.log(&format!(
        "{} {} scopes={:?} -> {status}",
        request.method,
        request.path,
        request.query_all("scope").collect::<Vec<_>>()
    ));
    respond(&mut stream, status, &headers, &body);
}

/// Decides the answer to one request at time `now` (seconds since the epoch).
fn answer(
    request: &Request,
    state: &State,
    now: u64,
) -> (u16, Vec<(&'static str, &'static str)>, String) {
    let error = |code: &str, message: &str| {
        json!({"errors": [{"code": code, "message": message}]}).to_string()
    };
    if request.path != "/token" {
        return (
            404,
            Vec::new(),
            error("NOT_FOUND", "only /token is served here"),
        );
    }
    if request.method != "GET" {
        return (
            405,
            vec![("Allow", "GET")],
            error("UNSUPPORTED", "only GET is supported"),
        );
    }
    let subject = match request.header("authorization") {
        None => None,
        Some(value) => match parse_basic_authorization(value) {
            Some((user, password)) if user == state.user && password == state.password => {
                Some(user)
            }
            _ => {
                return (
                    401,
                    vec![("WWW-Authenticate", "Basic realm=\"skiff-testkit\"")],
                    error("UNAUTHORIZED", "invalid username or password"),
                );
            }
        },
    };
    let requested: Vec<Access> = request
        .query_all("scope")
        .flat_map(str::split_whitespace)
        .filter_map(Access::parse)
        .collect();
    let granted: Vec<Access> = requested
        .into_iter()
        .filter_map(|access| {
            if subject.is_some() {
                Some(access)
            } else {
                access.anonymous()
            }
        })
        .collect();
    match state
        .signer
        .token(subject.as_deref().unwrap_or(""), &granted, now)
    {
        Ok(token) => {
            let body = json!({
                "token": token,
                "access_token": token,
                "expires_in": TOKEN_LIFETIME,
                "issued_at": rfc3339(now),
            });
            (200, Vec::new(), body.to_string())
        }
        Err(failure) => (500, Vec::new(), error("UNKNOWN", &failure.to_string())),
    }
}

/// One entry of a token's `access` claim, or of a request's scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Access {
    kind: String,
    name: String,
    actions: Vec<String>,
}

impl Access {
    /// Parses `TYPE:NAME:ACTION,ACTION` (the name may itself contain colons).
    fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let actions = actions
            .split(',')
            .map(str::trim)
            .filter(|action| !action.is_empty())
            .map(str::to_string)
            .collect();
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions,
        })
    }

    /// What an anonymous client gets of this request: `pull` on a repository, nothing else.
    fn anonymous(self) -> Option<Access> {
        (self.kind == "repository" && self.actions.iter().any(|action| action == "pull")).then(
            || Access {
                actions: vec!["pull".to_string()],
                ..self
            },
        )
    }

    fn to_json(&self) -> Value {
        json!({"type": self.kind, "name": self.name, "actions": self.actions})
    }
}

/// Signs tokens with an ECDSA P-256 key whose self-signed certificate the registry trusts.
struct Signer {
    key: EcdsaKeyPair,
    /// The certificate, DER in standard base64: the JWT header's `x5c` chain.
    x5c: String,
    rng: SystemRandom,
}

impl Signer {
    /// A new key pair and its self-signed certificate (returned as PEM).
    fn generate() -> Result<(Signer, String)> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|error| invalid(format!("generate signing key: {error}")))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|error| invalid(format!("certificate parameters: {error}")))?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "skiff-testkit registry token signer",
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        let cert = params
            .self_signed(&key_pair)
            .map_err(|error| invalid(format!("self-sign certificate: {error}")))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &rng,
        )
        .map_err(|error| invalid(format!("load signing key into ring: {error}")))?;
        let signer = Signer {
            key,
            x5c: STANDARD.encode(cert.der()),
            rng,
        };
        Ok((signer, cert.pem()))
    }

    /// A compact ES256 JWT for `subject` granting `access`, issued at `now`.
    fn token(&self, subject: &str, access: &[Access], now: u64) -> Result<String> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|error| invalid(format!("random token id: {error}")))?;
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now,
            "iat": now,
            "jti": jti.iter().map(|byte| format!("{byte:02x}")).collect::<String>(),
            "access": access.iter().map(Access::to_json).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|error| invalid(format!("sign token: {error}")))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp, e.g. `2024-01-01T00:00:00Z`.
fn rfc3339(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a proleptic Gregorian date, counting in 400-year eras that start on March 1st.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn scopes_parse_with_colons_in_the_name() {
        let access = Access::parse("repository:127.0.0.1:5000/app:pull,push").unwrap();
        assert_eq!(access.kind, "repository");
        assert_eq!(access.name, "127.0.0.1:5000/app");
        assert_eq!(access.actions, ["pull", "push"]);
        assert_eq!(access.anonymous().unwrap().actions, ["pull"]);
        assert_eq!(
            Access::parse("registry:catalog:*").unwrap().anonymous(),
            None
        );
        assert_eq!(Access::parse("nonsense"), None);
    }

    #[test]
    fn tokens_are_es256_jwts_with_the_certificate_in_x5c() {
        let (signer, pem) = Signer::generate().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let access = [Access::parse("repository:busybox:pull").unwrap()];
        let token = signer.token("skiff", &access, 1_704_067_200).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["x5c"][0], signer.x5c.as_str());
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], TOKEN_ISSUER);
        assert_eq!(claims["aud"], TOKEN_SERVICE);
        assert_eq!(claims["exp"], 1_704_067_200 + TOKEN_LIFETIME);
        assert_eq!(claims["access"][0]["actions"][0], "pull");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "r || s, 32 bytes each");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, signer.key.public_key().as_ref())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
    }
}
