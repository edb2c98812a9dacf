//! `PUT`/`PATCH certificatesigningrequests/{name}/approval`: approves or denies a request
//! (only `status.conditions` change, by the rules of [`crate::certificates::approval`]) after
//! checking the user may approve for its signer, and signs it when it becomes approved.

use axum::http::StatusCode;
use axum::response::Response;

use super::patch::apply_patch;
use super::write::{Change, check_resource_version, update_addressed};
use super::{Ctx, parse_body, respond_object};
use crate::certificates::approval;
use crate::status::ApiError;
use crate::{object, storage};

/// Serves an approval update: the whole object (`PUT`, `patch_body` none) or a patch of it.
pub async fn update(
    ctx: &Ctx,
    body: &[u8],
    patch_body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    let kind = match patch_body {
        Some(_) => Some(super::patch::patch_type(ctx)?),
        None => None,
    };
    let wanted = match patch_body {
        Some(_) => None,
        None => {
            let mut wanted = parse_body(&ctx.headers, body)?;
            super::write::check_type(&ctx.info, &mut wanted)?;
            super::write::check_name(ctx, &wanted)?;
            Some(wanted)
        }
    };
    let (current, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, None, ctx.name()).await?;
    approval::authorize_signer(
        &ctx.state,
        &ctx.identity,
        ctx.name(),
        approval::signer_name(&current),
    )
    .await?;
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let ca = ctx.state.options.csr_signer.clone();
    let max = ctx.state.options.cluster_signing_duration;
    let outcome = update_addressed(ctx, |current, revision| {
        let source = match (&wanted, kind, patch_body) {
            (Some(w), _, _) => w.clone(),
            (None, Some(kind), Some(p)) => apply_patch(&info, kind, current, p)?,
            _ => return Err(ApiError::bad_request("nothing to change")),
        };
        check_resource_version(&info, &name, &source, revision)?;
        let now = object::now();
        let mut new = approval::apply_approval(current, &source, &now)
            .map_err(|v| ApiError::invalid(&info, &name, approval::causes(v)))?;
        if let Some(ca) = &ca {
            let signing = approval::sign_if_approved(ca, &new, max)
                .map_err(|e| ApiError::internal(format!("cannot sign {name}: {e}")))?;
            approval::record(&mut new, signing, &now);
        }
        Ok(Change::Update(new))
    })
    .await?;
    let signed = outcome
        .object
        .pointer("/status/certificate")
        .is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty()));
    tracing::info!(csr = %name, user = %ctx.identity.username, signed, "approval updated");
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}
