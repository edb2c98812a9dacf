//! `docker login`'s check: the credentials are good when the registry's `/v2/` answers 200
//! to them, through the same challenge handling as a pull (Basic, or a bearer token for no
//! repository from the token server).

use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderMap};

use super::{MAX_DOCUMENT, RegistryClient, RegistryError, RegistryOptions, header_value};
use super::{error_message, http::read_body, retry};
use crate::error::Result;

impl RegistryClient {
    /// Checks `options.credentials` against `registry` (`docker.io`, `host:port`): pings
    /// `/v2/`, answers its challenge with them and asks `/v2/` again with the authorization it
    /// got. Wrong credentials are [`RegistryError::Unauthorized`].
    pub async fn login(registry: &str, options: &RegistryOptions) -> Result<()> {
        let client = RegistryClient::connect(registry, "", options).await?;
        let Some(authorization) = client.authorization.lock().await.clone() else {
            // The registry let anyone in.
            return Ok(());
        };
        let url = format!("{}/v2/", client.base);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, header_value(&authorization)?);
        let response = retry(&url, || client.http.get(&url, &headers)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_body(response, &url, MAX_DOCUMENT)
            .await
            .unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                // Docker's words for a refused Basic login.
                detail: format!(
                    "login attempt to {url} failed with status: {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or_default()
                ),
            }
            .into());
        }
        Err(RegistryError::Status {
            url,
            status: status.as_u16(),
            message: error_message(&body),
        }
        .into())
    }
}
