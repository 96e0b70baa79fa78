//! Reading request bodies with a size limit.

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tower_http::timeout::TimeoutError;

use crate::error::ApiError;

/// Reads the body up to `limit` bytes. A larger body is refused, but up to
/// `limit` more bytes of it are read and thrown away first, so that the
/// client, still sending, gets the 413 instead of a reset connection.
///
/// A body of one frame (a body the authentication already read to check
/// its signature) is returned as it is, without a copy: report bodies are
/// up to 5 MiB.
pub async fn read_body(mut body: Body, limit: usize, expected: usize) -> Result<Bytes, ApiError> {
    // A stalled client (`limits.body_read_timeout`) is told so, not that
    // its body is bad.
    let unreadable = |e: axum::Error| match e.into_inner().downcast::<TimeoutError>() {
        Ok(_) => ApiError::BodyTimeout,
        Err(e) => ApiError::BadRequest {
            field: "body",
            rule: format!("could not be read: {e}"),
        },
    };
    let mut first: Option<Bytes> = None;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue;
        };
        let seen = buf.len() + first.as_ref().map_or(0, Bytes::len);
        if seen + data.len() > limit {
            let mut drained = 0;
            while drained < limit {
                match body.frame().await {
                    Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            return Err(ApiError::BodyTooLarge { limit });
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    buf.reserve(expected.min(limit).max(earlier.len() + data.len()));
                    buf.extend_from_slice(&earlier);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(parts: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn one_frame_is_not_copied_several_are_joined() {
        let data = Bytes::from(vec![7u8; 4096]);
        let got = read_body(Body::from(data.clone()), 10_000, 0)
            .await
            .unwrap();
        assert_eq!(got.as_ptr(), data.as_ptr());
        let got = read_body(streamed(&[b"ab", b"cd", b"e"]), 10, 5)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcde");
        let err = read_body(streamed(&[b"abcdef", b"ghijkl"]), 10, 0)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::BodyTooLarge { limit: 10 }));
    }
}
