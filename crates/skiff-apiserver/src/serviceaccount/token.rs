//! Service account tokens: ES256 JWTs signed with a P-256 key kept next to the server's TLS
//! material (`DATA/server/sa.key`, PKCS#8 PEM, generated on first start), with the claims
//! kube-apiserver writes (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and the
//! `kubernetes.io` claim naming the namespace, the ServiceAccount and the bound pod).
//!
//! Written by hand on `ring` rather than through a JWT crate: one algorithm, one header, and
//! the whole format is base64url(JSON) joined by dots; `ring` is already the workspace's
//! crypto provider, so nothing new is linked in.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The audience of the API server itself (kube-apiserver's default `--api-audiences`).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Tolerated clock skew when checking `nbf` and `iat`, in seconds.
const SKEW: i64 = 60;

/// Why a token could not be issued or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing key file could not be read or written.
    #[error("cannot {action} the service account signing key {path}: {reason}")]
    Key {
        /// What was being done.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
    /// The token is not a JWT of the expected form.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the server's key.
    #[error("invalid signature")]
    Signature,
    /// The token was issued by someone else.
    #[error("token issued by {0:?}, not this server")]
    Issuer(String),
    /// The token's audiences do not include the server's.
    #[error("token audiences {0:?} are not accepted")]
    Audience(Vec<String>),
    /// The token expired (or is not valid yet).
    #[error("token is expired or not yet valid")]
    Expired,
}

/// A name and uid, as the `kubernetes.io` claim refers to objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The node of the bound pod, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// The claims of a service account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Unique id.
    #[serde(default)]
    pub jti: String,
    /// Who the token stands for.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The service account token signer and verifier of one API server.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    kid: String,
    /// The issuer written into and expected in tokens (`--service-account-issuer`).
    pub issuer: String,
    /// The audiences the API server accepts (`--api-audiences`); the first is the default of
    /// TokenRequests without audiences.
    pub audiences: Vec<String>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn pem_decode(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

impl TokenSigner {
    /// Loads the key `sa.key` from `dir`, generating it on first use.
    pub fn load_or_create(
        dir: &Path,
        issuer: &str,
        audiences: Vec<String>,
    ) -> Result<TokenSigner, TokenError> {
        let path = dir.join("sa.key");
        let key_err = |action, reason: String| TokenError::Key {
            action,
            path: path.clone(),
            reason,
        };
        let rng = SystemRandom::new();
        let der = match std::fs::read_to_string(&path) {
            Ok(text) => pem_decode(&text).ok_or_else(|| key_err("parse", "not PEM".into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|e| key_err("generate", e.to_string()))?;
                crate::pki::write_private(&path, &pem_encode(doc.as_ref()), 0o600)
                    .map_err(|e| key_err("write", e.to_string()))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(key_err("read", e.to_string())),
        };
        TokenSigner::from_pkcs8(&der, issuer, audiences).map_err(|reason| key_err("parse", reason))
    }

    /// A signer over a PKCS#8 P-256 key.
    pub fn from_pkcs8(
        der: &[u8],
        issuer: &str,
        audiences: Vec<String>,
    ) -> Result<TokenSigner, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        use sha2::Digest;
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        let audiences = if audiences.is_empty() {
            vec![DEFAULT_AUDIENCE.to_string()]
        } else {
            audiences
        };
        Ok(TokenSigner {
            key,
            kid,
            issuer: issuer.to_string(),
            audiences,
        })
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let header = serde_json::to_vec(&header).map_err(|e| TokenError::Sign(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Checks a token's signature, issuer, time window and audience (one of the server's);
    /// returns its claims. Whether its ServiceAccount and pod still exist is the caller's
    /// check.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let malformed = TokenError::Malformed("not three dot-separated parts");
        let (signed, signature) = token.rsplit_once('.').ok_or(malformed)?;
        let Some((header, payload)) = signed.split_once('.').filter(|(_, p)| !p.contains('.'))
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let decode = |part: &str, what| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed(what))
        };
        let header: Value = serde_json::from_slice(&decode(header, "header is not base64url")?)
            .map_err(|_| TokenError::Malformed("header is not JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Malformed("alg is not ES256"));
        }
        let signature = decode(signature, "signature is not base64url")?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&decode(payload, "payload is not base64url")?)
            .map_err(|_| TokenError::Malformed("claims are not those of a service account"))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if claims.exp <= now || claims.nbf > now + SKEW {
            return Err(TokenError::Expired);
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        Ok(claims)
    }

    /// The JSON Web Key Set of the signing key (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
        let (x, y) = if point.len() == 65 {
            (&point[1..33], &point[33..65])
        } else {
            (&point[..0], &point[..0])
        };
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    /// The OpenID discovery document (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64, aud: &str) -> Claims {
        Claims {
            iss: DEFAULT_AUDIENCE.into(),
            sub: "system:serviceaccount:default:default".into(),
            aud: vec![aud.into()],
            exp,
            iat: exp - 3600,
            nbf: exp - 3600,
            jti: "x".into(),
            kubernetes: KubernetesClaim {
                namespace: "default".into(),
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "u".into(),
                },
                pod: None,
                node: None,
            },
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = TokenSigner::load_or_create(dir.path(), DEFAULT_AUDIENCE, vec![]).unwrap();
        let again = TokenSigner::load_or_create(dir.path(), DEFAULT_AUDIENCE, vec![]).unwrap();
        let now = unix_now();
        let token = signer.sign(&claims(now + 600, DEFAULT_AUDIENCE)).unwrap();
        assert_eq!(again.verify(&token, now).unwrap().exp, now + 600);
        assert!(matches!(
            signer.verify(&token, now + 601),
            Err(TokenError::Expired)
        ));
        let other = tempfile::tempdir().unwrap();
        let forger = TokenSigner::load_or_create(other.path(), DEFAULT_AUDIENCE, vec![]).unwrap();
        let forged = forger.sign(&claims(now + 600, DEFAULT_AUDIENCE)).unwrap();
        assert!(matches!(
            signer.verify(&forged, now),
            Err(TokenError::Signature)
        ));
        let elsewhere = signer.sign(&claims(now + 600, "vault")).unwrap();
        assert!(matches!(
            signer.verify(&elsewhere, now),
            Err(TokenError::Audience(_))
        ));
        assert!(signer.verify("a.b", now).is_err());
        assert_eq!(signer.jwks()["keys"][0]["crv"], "P-256");
    }
}
