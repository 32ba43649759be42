//! A report streamed to the API in 64 KiB chunks, written by a blocking task.

use api::BackendError;
use futures::StreamExt;

use super::*;

const CHUNK: usize = 64 * 1024;

/// A report as the API streams it.
pub(super) type ReportStream =
    futures::stream::BoxStream<'static, Result<bytes::Bytes, BackendError>>;

/// Streams what `write` writes, on a blocking thread, in 64 KiB chunks (the CSV and the
/// workbook report alike); an error of `write` ends the stream with it.
pub(super) fn stream_blocking<E: std::fmt::Display>(
    write: impl FnOnce(&mut ChannelWriter) -> Result<(), E> + Send + 'static,
) -> ReportStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, BackendError>>(16);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write(&mut out);
        let _ = std::io::Write::flush(&mut out);
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(internal(e)));
        }
    });
    tokio_stream_from(rx).boxed()
}

/// A `Write` that sends 64 KiB chunks down a channel (the report stream).
pub(super) struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, BackendError>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
