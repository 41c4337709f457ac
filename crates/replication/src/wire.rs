//! What replicas exchange with a coordinator over the node RPC, and how a replica serves it
//! from its `LocalStore`. Small requests travel as one [`Op`] (kind `Kind::ObjectOp`), each
//! variant with the answer its [`Ask`] type names; object bodies are pushed ([`PutHeader`],
//! [`PartHeader`]) or pulled ([`GetWire`]) as streams. These are wire types: the store's
//! records never travel as such.
//!
//! A pushed body ends with one empty chunk: a stream that stops without it was cut short (the
//! client's body failed, or the coordinator gave up) and the replica stores nothing.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use ironbucket_rpc::{DataStream, Kind, Message};
use ironbucket_store::*;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The body checks a replica repeats (the trailer, if any, was verified by the coordinator).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Checks {
    pub content_length: Option<u64>,
    pub content_md5: Option<String>,
    pub checksums: Checksums,
    pub compute: Vec<ChecksumAlgorithm>,
}

/// A pushed body's header: what the replica does with the body, and what it answers (the
/// message's reply is `Result<Answer>`).
pub(crate) trait Pushed: Message<Reply = Result<Self::Answer>> + Clone {
    type Answer: Serialize + DeserializeOwned + Send + 'static;
    fn content_length(&self) -> Option<u64>;
    /// Stores the body on this node.
    fn store(self, local: &LocalStore, body: ByteStream) -> futures::future::BoxFuture<'_, Result<Self::Answer>>;
}

impl Message for PutHeader {
    const KIND: Kind = Kind::ObjectPut;
    type Reply = Result<ObjectInfo>;
}

impl Pushed for PutHeader {
    type Answer = ObjectInfo;
    fn content_length(&self) -> Option<u64> {
        self.checks.content_length
    }
    fn store(self, local: &LocalStore, body: ByteStream) -> futures::future::BoxFuture<'_, Result<ObjectInfo>> {
        Box::pin(put_stamped(local, self, body))
    }
}

impl Message for PartHeader {
    const KIND: Kind = Kind::ObjectPart;
    type Reply = Result<PartInfo>;
}

impl Pushed for PartHeader {
    type Answer = PartInfo;
    fn content_length(&self) -> Option<u64> {
        self.checks.content_length
    }
    fn store(self, local: &LocalStore, body: ByteStream) -> futures::future::BoxFuture<'_, Result<PartInfo>> {
        Box::pin(local.upload_part(self.into_request(), body))
    }
}

/// A trailer's checksums, verified by the coordinator once the body has been read.
pub(crate) type Trailer = (Vec<ChecksumAlgorithm>, TrailerChecksums);

impl Checks {
    /// The checks a replica repeats, and the trailer the coordinator verifies itself.
    pub fn split(checks: &mut BodyChecks) -> (Checks, Option<Trailer>) {
        let trailer = checks.trailer.take().map(|t| (checks.compute.clone(), t));
        let c = Checks {
            content_length: checks.content_length,
            content_md5: checks.content_md5.clone(),
            checksums: checks.checksums.clone(),
            compute: checks.compute.clone(),
        };
        (c, trailer)
    }

    fn body_checks(self) -> BodyChecks {
        BodyChecks {
            content_length: self.content_length,
            content_md5: self.content_md5,
            checksums: self.checksums,
            compute: self.compute,
            trailer: None,
        }
    }
}

fn key_of(k: &Option<CustomerKey>) -> Option<[u8; 32]> {
    k.as_ref().map(|k| *k.as_bytes())
}

fn customer(k: Option<[u8; 32]>) -> Option<CustomerKey> {
    k.map(CustomerKey::from_bytes)
}

/// A stamped PutObject without its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PutHeader {
    pub bucket: String,
    pub key: String,
    pub meta: ObjectMeta,
    pub lock: LockRequest,
    pub sse: Option<String>,
    /// SSE-C key, forwarded over the authenticated node RPC and never stored.
    pub sse_c: Option<[u8; 32]>,
    pub checks: Checks,
    pub conditions: Conditions,
    pub hlc: Hlc,
    pub origin: u64,
    /// Read repair: what is kept from the replica the version is copied from.
    #[serde(default)]
    pub repair: Option<Repair>,
}

impl PutHeader {
    pub fn new(req: &PutObject, checks: Checks, hlc: Hlc, origin: u64) -> Self {
        Self {
            bucket: req.bucket.clone(),
            key: req.key.clone(),
            meta: req.meta.clone(),
            lock: req.lock.clone(),
            sse: req.sse.clone(),
            sse_c: key_of(&req.sse_c),
            checks,
            conditions: req.conditions.clone(),
            hlc,
            origin,
            repair: None,
        }
    }

    pub fn into_request(self) -> PutObject {
        PutObject {
            lock: self.lock,
            sse_c: customer(self.sse_c),
            sse: self.sse,
            bucket: self.bucket,
            key: self.key,
            meta: self.meta,
            checks: self.checks.body_checks(),
            conditions: self.conditions,
        }
    }
}

/// An UploadPart without its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartHeader {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number: u32,
    pub sse_c: Option<[u8; 32]>,
    pub checks: Checks,
}

impl PartHeader {
    pub fn new(req: &UploadPart, checks: Checks) -> Self {
        Self {
            bucket: req.bucket.clone(),
            key: req.key.clone(),
            upload_id: req.upload_id.clone(),
            part_number: req.part_number,
            sse_c: key_of(&req.sse_c),
            checks,
        }
    }

    pub fn into_request(self) -> UploadPart {
        UploadPart {
            sse_c: customer(self.sse_c),
            bucket: self.bucket,
            key: self.key,
            upload_id: self.upload_id,
            part_number: self.part_number,
            checks: self.checks.body_checks(),
        }
    }
}

/// A GetObject / HeadObject. Pulled (an object's body), its reply is the stream's first chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GetWire {
    pub sse_c: Option<[u8; 32]>,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub range: Option<RangeSpec>,
    pub conditions: Conditions,
}

impl Message for GetWire {
    const KIND: Kind = Kind::ObjectGet;
    type Reply = Result<(ObjectInfo, Option<ByteRange>)>;
}

impl GetWire {
    pub fn new(req: &GetObject) -> Self {
        Self {
            sse_c: key_of(&req.sse_c),
            bucket: req.bucket.clone(),
            key: req.key.clone(),
            version_id: req.version_id.clone(),
            range: req.range,
            conditions: req.conditions.clone(),
        }
    }

    pub fn request(self) -> GetObject {
        GetObject {
            sse_c: customer(self.sse_c),
            bucket: self.bucket,
            key: self.key,
            version_id: self.version_id,
            range: self.range,
            conditions: self.conditions,
        }
    }
}

/// A replica's answer to a read: which version it holds (compared across replicas) and what
/// the request gets from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeadReply {
    pub version: Option<VersionStamp>,
    pub result: Result<ObjectInfo>,
}

/// Per-version metadata operations on a replica. The coordinator names the version: replicas
/// may differ on which version is current.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MetaOp {
    /// The version's tags, retention, legal hold and ACL with their stamps ([`VersionMeta`]).
    State(String),
    /// A stamped change to one field (last writer wins per field).
    Change {
        version_id: String,
        change: MetaChange,
        at: Stamp,
    },
    /// Read repair: take every field the coordinator's merge holds newer.
    Merge { version_id: String, meta: VersionMeta },
}

/// A stamped delete: of one version, or (no version id) a new delete marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeleteAt {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub bypass: bool,
    pub hlc: Hlc,
    pub origin: u64,
}

/// Newest version per key after `after` (tombstones included), and whether there is more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ListNewest {
    pub bucket: String,
    pub prefix: String,
    pub after: Option<String>,
    pub limit: usize,
}

/// A raw page of versions (merged by the coordinator).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Versions {
    pub bucket: String,
    pub query: VersionListQuery,
}

/// Opens a multipart upload under the coordinator's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CreateUpload {
    pub bucket: String,
    pub key: String,
    pub meta: ObjectMeta,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    pub sse_c: Option<[u8; 32]>,
    pub upload_id: String,
}

/// Completes a multipart upload under the coordinator's stamp.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Complete {
    pub req: CompleteMultipart,
    pub hlc: Hlc,
    pub origin: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Abort {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Parts {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number_marker: Option<u32>,
    pub max_parts: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Uploads {
    pub bucket: String,
    pub query: UploadListQuery,
}

/// A per-version metadata operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MetaAt {
    pub bucket: String,
    pub key: String,
    pub op: MetaOp,
}

/// Whether the bucket holds anything on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InUse {
    pub bucket: String,
}

/// One small request to a replica (the wire form of every [`Ask`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Op {
    Head(GetWire),
    Delete(DeleteAt),
    ListNewest(ListNewest),
    Versions(Versions),
    CreateUpload(CreateUpload),
    Complete(Complete),
    Abort(Abort),
    Parts(Parts),
    Uploads(Uploads),
    Meta(MetaAt),
    InUse(InUse),
}

impl Op {
    /// The bucket the request is about; `None` for a question about the bucket itself (whether
    /// it is in use, asked while it is deleted).
    pub(crate) fn bucket(&self) -> Option<&str> {
        Some(match self {
            Op::Head(g) => &g.bucket,
            Op::Delete(d) => &d.bucket,
            Op::ListNewest(l) => &l.bucket,
            Op::Versions(v) => &v.bucket,
            Op::CreateUpload(c) => &c.bucket,
            Op::Complete(c) => &c.req.bucket,
            Op::Abort(a) => &a.bucket,
            Op::Parts(p) => &p.bucket,
            Op::Uploads(u) => &u.bucket,
            Op::Meta(m) => &m.bucket,
            Op::InUse(_) => return None,
        })
    }
}

/// A request to a replica and the answer it gets: it travels as an [`Op`] (kind
/// `Kind::ObjectOp`), the answer as `Result<Answer>`. Each request type names its answer, so a
/// coordinator cannot read one request's answer as another's.
pub(crate) trait Ask: Clone + Send + Sync + 'static {
    type Answer: Serialize + DeserializeOwned + Send + 'static;
    fn into_op(self) -> Op;
}

macro_rules! ask {
    ($($ty:ident => $variant:ident, $answer:ty;)*) => {$(
        impl Ask for $ty {
            type Answer = $answer;
            fn into_op(self) -> Op {
                Op::$variant(self)
            }
        }
    )*};
}

ask! {
    GetWire => Head, HeadReply;
    DeleteAt => Delete, DeleteResult;
    ListNewest => ListNewest, (Vec<(ObjectInfo, bool)>, bool);
    Versions => Versions, RawVersionPage;
    CreateUpload => CreateUpload, String;
    Complete => Complete, ObjectInfo;
    Abort => Abort, ();
    Parts => Parts, ListPartsPage;
    Uploads => Uploads, UploadListPage;
    InUse => InUse, bool;
}

/// The metadata a replica holds of one version ([`MetaOp::State`]).
#[derive(Debug, Clone)]
pub(crate) struct MetaState {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
}

impl Ask for MetaState {
    type Answer = VersionMeta;
    fn into_op(self) -> Op {
        Op::Meta(MetaAt {
            bucket: self.bucket,
            key: self.key,
            op: MetaOp::State(self.version_id),
        })
    }
}

/// A stamped change to one metadata field ([`MetaOp::Change`]) or a read repair's merge
/// ([`MetaOp::Merge`]): both answer nothing but success.
#[derive(Debug, Clone)]
pub(crate) struct MetaWrite(pub MetaAt);

impl Ask for MetaWrite {
    type Answer = ();
    fn into_op(self) -> Op {
        Op::Meta(self.0)
    }
}

/// An [`Ask`] on the wire: the [`Op`], with the answer its type names.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct OpMessage<A> {
    op: Op,
    #[serde(skip)]
    answer: PhantomData<fn() -> A>,
}

impl<A: Ask> OpMessage<A> {
    pub fn new(a: A) -> Self {
        Self {
            op: a.into_op(),
            answer: PhantomData,
        }
    }
}

impl<A: Ask> Message for OpMessage<A> {
    const KIND: Kind = Kind::ObjectOp;
    type Reply = Result<A::Answer>;
}

fn encode<T: Serialize>(r: Result<T>) -> Vec<u8> {
    serde_json::to_vec(&r).unwrap_or_else(|e| {
        let err: Result<()> = Err(Error::Internal(format!("cannot encode an answer: {e}")));
        serde_json::to_vec(&err).unwrap_or_default()
    })
}

/// Decodes an answer made by [`serve`] (or a push/pull handler).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice::<Result<T>>(bytes)
        .map_err(|e| Error::Internal(format!("bad answer from a replica: {e}")))?
}

/// The answer to request type `A`, encoded (the type checks that a replica answers what the
/// request names).
fn answer<A: Ask>(r: Result<A::Answer>) -> Vec<u8> {
    encode(r)
}

/// Fault injection for tests (`FAILPOINTS=list-answer=return(MS)`, builds with the
/// `failpoints` feature only): this member answers its part of a listing MS milliseconds late,
/// as a member whose disk is in trouble does.
async fn slow_answer_for_tests() {
    let delay = || -> Option<u64> {
        fail::fail_point!("list-answer", |ms: Option<String>| ms.and_then(|m| m.parse().ok()));
        None
    };
    if let Some(ms) = delay() {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Runs one [`Op`] against this node's store; the answer is a JSON `Result` of the answer its
/// [`Ask`] type names.
pub(crate) async fn serve(local: &LocalStore, op: Op) -> Vec<u8> {
    match op {
        Op::Head(g) => answer::<GetWire>(wire_head(local, g).await),
        Op::Delete(d) => answer::<DeleteAt>(
            local
                .delete_object_at(&d.bucket, &d.key, d.version_id.as_deref(), d.bypass, d.hlc, d.origin)
                .await,
        ),
        Op::ListNewest(l) => {
            slow_answer_for_tests().await;
            answer::<ListNewest>(local.list_newest(&l.bucket, &l.prefix, l.after, l.limit).await)
        }
        Op::Versions(v) => answer::<Versions>(local.list_versions_raw(&v.bucket, v.query).await),
        Op::CreateUpload(c) => {
            let req = CreateMultipart {
                sse_c: customer(c.sse_c),
                bucket: c.bucket,
                key: c.key,
                meta: c.meta,
                checksum_algorithm: c.checksum_algorithm,
            };
            answer::<CreateUpload>(local.create_multipart_upload_with_id(req, c.upload_id).await)
        }
        Op::Complete(c) => answer::<Complete>(local.complete_multipart_upload_at(c.req, c.hlc, c.origin).await),
        Op::Abort(a) => answer::<Abort>(local.abort_multipart_upload(&a.bucket, &a.key, &a.upload_id).await),
        Op::Parts(p) => answer::<Parts>(
            local
                .list_parts(ListParts {
                    bucket: p.bucket,
                    key: p.key,
                    upload_id: p.upload_id,
                    part_number_marker: p.part_number_marker,
                    max_parts: p.max_parts,
                })
                .await,
        ),
        Op::Uploads(u) => answer::<Uploads>(local.list_multipart_uploads(&u.bucket, u.query).await),
        Op::Meta(m) => meta_op(local, &m.bucket, &m.key, m.op).await,
        Op::InUse(b) => answer::<InUse>(local.bucket_in_use(&b.bucket).await),
    }
}

/// A replica's answer to a read: the version it holds and what the request gets from it.
pub(crate) async fn wire_head(local: &LocalStore, g: GetWire) -> Result<HeadReply> {
    let version = local.newest_version(&g.bucket, &g.key, g.version_id.as_deref())?;
    let result = local.head_object(g.request()).await;
    Ok(HeadReply { version, result })
}

async fn meta_op(local: &LocalStore, bucket: &str, key: &str, op: MetaOp) -> Vec<u8> {
    match op {
        MetaOp::State(v) => answer::<MetaState>(local.version_meta(bucket, key, &v)),
        MetaOp::Change { version_id, change, at } => {
            answer::<MetaWrite>(local.change_meta_at(bucket, key, &version_id, change, at).await)
        }
        MetaOp::Merge { version_id, meta } => {
            answer::<MetaWrite>(local.merge_meta(bucket, key, &version_id, meta).await)
        }
    }
}

/// A pushed body as a `ByteStream`: chunks pass through; the empty chunk that ends a complete
/// transfer is swallowed; a stream that stops without it yields an error (nothing is stored).
pub(crate) fn terminated(data: DataStream) -> ByteStream {
    Box::pin(Terminated {
        inner: data,
        done: false,
    })
}

struct Terminated {
    inner: DataStream,
    done: bool,
}

impl Stream for Terminated {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            return match self.inner.poll_next_unpin(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(b))) if b.is_empty() => {
                    self.done = true;
                    continue;
                }
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    Poll::Ready(Some(Err(std::io::Error::other(e))))
                }
                Poll::Ready(None) => {
                    self.done = true;
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "the coordinator's transfer was cut short; nothing stored",
                    ))))
                }
            };
        }
    }
}

/// Stores a stamped write (or a read repair's copy) on this replica.
pub(crate) async fn put_stamped(local: &LocalStore, mut h: PutHeader, body: ByteStream) -> Result<ObjectInfo> {
    let (hlc, origin, repair) = (h.hlc, h.origin, h.repair.take());
    let r = match repair {
        Some(x) => local.repair_object_at(h.into_request(), body, hlc, origin, x).await,
        None => local.put_object_at(h.into_request(), body, hlc, origin).await,
    };
    r.map(|(info, _)| info)
}

/// Serves a pushed body of kind `kind`, once `bucket_ready` has returned for its bucket.
pub(crate) async fn serve_push(
    local: &LocalStore,
    kind: Kind,
    header: Vec<u8>,
    data: DataStream,
    bucket_ready: impl AsyncFnOnce(&str),
) -> std::result::Result<Vec<u8>, String> {
    match kind {
        Kind::ObjectPut => {
            let h: PutHeader = serde_json::from_slice(&header).map_err(|e| format!("bad put header: {e}"))?;
            bucket_ready(&h.bucket).await;
            Ok(encode(put_stamped(local, h, terminated(data)).await))
        }
        Kind::ObjectPart => {
            let h: PartHeader = serde_json::from_slice(&header).map_err(|e| format!("bad part header: {e}"))?;
            bucket_ready(&h.bucket).await;
            Ok(encode(local.upload_part(h.into_request(), terminated(data)).await))
        }
        other => Err(format!("this node takes no bulk data of kind {other}")),
    }
}

/// Serves an object body, once `bucket_ready` has returned for its bucket: the first chunk is the JSON answer (`GetWire`'s reply), the body
/// follows.
pub(crate) async fn serve_get(
    local: &Arc<LocalStore>,
    payload: &[u8],
    bucket_ready: impl AsyncFnOnce(&str),
) -> std::result::Result<DataStream, String> {
    let g: GetWire = serde_json::from_slice(payload).map_err(|e| format!("bad get request: {e}"))?;
    bucket_ready(&g.bucket).await;
    let reply = |r: <GetWire as Message>::Reply| Bytes::from(encode(r));
    match local.get_object(g.request()).await {
        Ok(out) => {
            let head = reply(Ok((out.info, out.range)));
            let body = out.body.map(|r| r.map_err(|e| e.to_string()));
            Ok(Box::pin(futures::stream::once(async move { Ok(head) }).chain(body)))
        }
        Err(e) => {
            let head = reply(Err(e));
            Ok(Box::pin(futures::stream::once(async move { Ok(head) })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(items: Vec<std::result::Result<&'static str, &'static str>>) -> DataStream {
        Box::pin(futures::stream::iter(items.into_iter().map(|r| {
            r.map(|s| Bytes::from_static(s.as_bytes())).map_err(str::to_string)
        })))
    }

    async fn collect(s: ByteStream) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(r) = s.next().await {
            match r {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return (out, false),
            }
        }
        (out, true)
    }

    #[tokio::test]
    async fn a_terminated_stream_is_complete() {
        let (data, ok) = collect(terminated(stream(vec![Ok("ab"), Ok("cd"), Ok("")]))).await;
        assert!(ok);
        assert_eq!(data, b"abcd");
    }

    #[tokio::test]
    async fn a_stream_without_its_end_marker_fails() {
        let (_, ok) = collect(terminated(stream(vec![Ok("ab"), Ok("cd")]))).await;
        assert!(!ok, "a cut-short transfer must not look complete");
        let (_, ok) = collect(terminated(stream(vec![Ok("ab"), Err("boom"), Ok("")]))).await;
        assert!(!ok);
    }

    /// Protocol 1 and 2 sent `Op`'s variants as struct variants; the typed requests that
    /// replaced them must keep those bytes (older peers read them).
    #[test]
    fn typed_requests_keep_the_bytes_older_peers_read() {
        #[derive(Serialize)]
        enum Old {
            Delete {
                bucket: String,
                key: String,
                version_id: Option<String>,
                bypass: bool,
                hlc: Hlc,
                origin: u64,
            },
            InUse {
                bucket: String,
            },
        }
        let hlc = Hlc {
            physical: 1_700_000_000_000,
            logical: 3,
        };
        let old = Old::Delete {
            bucket: "b".into(),
            key: "k".into(),
            version_id: Some("v".into()),
            bypass: true,
            hlc,
            origin: 7,
        };
        let new = DeleteAt {
            bucket: "b".into(),
            key: "k".into(),
            version_id: Some("v".into()),
            bypass: true,
            hlc,
            origin: 7,
        };
        let sent = serde_json::to_vec(&OpMessage::new(new)).unwrap();
        assert_eq!(sent, serde_json::to_vec(&old).unwrap());
        let sent = serde_json::to_vec(&OpMessage::new(InUse { bucket: "b".into() })).unwrap();
        assert_eq!(sent, serde_json::to_vec(&Old::InUse { bucket: "b".into() }).unwrap());
        assert!(matches!(serde_json::from_slice::<Op>(&sent).unwrap(), Op::InUse(_)));
    }

    #[test]
    fn errors_cross_the_wire_intact() {
        let e: Result<ObjectInfo> = Err(Error::PreconditionFailed);
        let back = decode::<ObjectInfo>(&encode(e));
        assert_eq!(back.err(), Some(Error::PreconditionFailed));
    }
}
