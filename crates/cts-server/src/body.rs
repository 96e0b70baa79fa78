//! Reading request bodies with a size limit.

use axum::body::Body;
use http_body_util::BodyExt;

use crate::error::ApiError;

/// Reads the body up to `limit` bytes. A larger body is refused, but up to
/// `limit` more bytes of it are read and thrown away first, so that the
/// client, still sending, gets the 413 instead of a reset connection.
pub async fn read_body(mut body: Body, limit: usize, expected: usize) -> Result<Vec<u8>, ApiError> {
    let unreadable = |e: axum::Error| ApiError::BadRequest {
        field: "body",
        rule: format!("could not be read: {e}"),
    };
    let mut buf = Vec::with_capacity(expected.min(limit));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let mut drained = 0;
            while drained < limit {
                match body.frame().await {
                    Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            return Err(ApiError::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}
