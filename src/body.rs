//! [`Body`]: what the client accepts as a request body, and [`ReplayBody`], the body
//! every attempt sends (public as `closefirst::retry::ReplayBody`). Below `retry` and
//! `dispatch`, which both use it.

mod replay;

pub(crate) use replay::Recording;
pub use replay::ReplayBody;

/// Request bodies the client can send: any [`http_body::Body`] that can move between
/// threads, such as `http_body_util::Full<Bytes>` or `Empty<Bytes>`.
pub trait Body:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<T> Body for T
where
    T: http_body::Body + Send + 'static,
    T::Data: Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
}
