//! Request routing: the header is read, the version checked against what
//! this server implements, the body decoded and handed to its API, and the
//! answer encoded with the matching response header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages as m;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::api;
use crate::auth::Session;
use crate::authz::Access;
use crate::errors::code;
use crate::metrics;
use crate::server::{Ctx, MAX_OTHER_FRAME_BYTES};

/// Every API this server answers, with the versions it implements:
/// `(api key, min, max)`. Versions are capped where a newer one needs
/// something pgbroker does not have (topic ids in Fetch 13+ and Produce
/// 10+, batched groups in OffsetFetch 8+, new consumer protocol fields).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED_APIS
        .iter()
        .any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

/// The ApiVersions answer's list.
pub(crate) fn api_list() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect()
}

/// What a handler knows of the request besides its body.
pub(crate) struct ReqInfo<'a> {
    /// The request header.
    pub header: &'a RequestHeader,
    /// The client's address.
    pub peer: &'a SocketAddr,
    /// What the connection may do.
    pub access: &'a Access,
}

impl ReqInfo<'_> {
    /// The client id from the header, or an empty string.
    pub fn client_id(&self) -> &str {
        self.header.client_id.as_deref().unwrap_or("")
    }
}

/// What went wrong before an API handler could answer. Decoding failures
/// close the connection, as Kafka does; the others are answered.
type Answer = Result<Option<BytesMut>, String>;

/// Handles one frame; `Ok(None)` means no answer is due (produce with
/// acks=0), `Err` closes the connection. A request the connection's
/// authentication state does not allow closes it too, as in Kafka.
pub(crate) async fn handle(ctx: &Arc<Ctx>, frame: Bytes, peer: &SocketAddr, session: &mut Session) -> Answer {
    if session.expects_raw_token() {
        return api::sasl::raw_token(ctx, &frame, peer, session).await;
    }
    let mut raw = frame.clone();
    let key = raw.get_i16();
    let version = raw.get_i16();
    let correlation_id = raw.get_i32();
    if !session.allows(ApiKey::try_from(key).ok()) {
        return Err(format!("request with API key {key} before authentication"));
    }
    let Ok(api) = ApiKey::try_from(key) else {
        metrics::request("unknown", false, 0.0);
        return Ok(Some(bare_error(correlation_id, code::UNSUPPORTED_VERSION)));
    };
    if !supported(api, version) {
        metrics::request(api_name(api), false, 0.0);
        if api == ApiKey::ApiVersions {
            // Answered in version 0, which every client can read, so that
            // it retries with a version from the list.
            let mut resp = ApiVersionsResponse::default();
            resp.error_code = code::UNSUPPORTED_VERSION;
            resp.api_keys = api_list();
            return encode(correlation_id, 0, 0, &resp).map(Some);
        }
        return Ok(Some(bare_error(correlation_id, code::UNSUPPORTED_VERSION)));
    }
    if api != ApiKey::Produce && frame.len() > MAX_OTHER_FRAME_BYTES {
        return Err(format!("{api:?} request of {} bytes", frame.len()));
    }
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(|e| format!("{api:?} v{version} header: {e}"))?;
    let started = Instant::now();
    let r = Route {
        ctx,
        api,
        version,
        header: &header,
        peer,
        body,
        access: session.access.clone(),
        session,
    };
    let answer = route(r).await;
    metrics::request(api_name(api), answer.is_ok(), started.elapsed().as_secs_f64());
    answer
}

/// A response of only a correlation id and an error code: what clients
/// read for an API or version the server does not know.
fn bare_error(correlation_id: i32, error: i16) -> BytesMut {
    let mut b = BytesMut::with_capacity(6);
    b.extend_from_slice(&correlation_id.to_be_bytes());
    b.extend_from_slice(&error.to_be_bytes());
    b
}

fn encode<R: Encodable>(correlation_id: i32, header_version: i16, version: i16, resp: &R) -> Result<BytesMut, String> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("encoding response header: {e}"))?;
    resp.encode(&mut buf, version)
        .map_err(|e| format!("encoding response: {e}"))?;
    Ok(buf)
}

/// Decodes the body as `$req`, runs `$handler` (with the connection's
/// session when marked `session`), encodes its answer.
macro_rules! call {
    ($r:ident, $req:ident, $handler:path $(, $session:ident)?) => {{
        let (ctx, api, version, header) = ($r.ctx, $r.api, $r.version, $r.header);
        let req = m::$req::decode(&mut $r.body, version).map_err(|e| format!("{api:?} v{version}: {e}"))?;
        let info = ReqInfo { header, peer: $r.peer, access: &$r.access };
        match $handler(ctx, version, &info, req $(, &mut *$r.$session)?).await {
            Some(resp) => encode(header.correlation_id, api.response_header_version(version), version, &resp).map(Some),
            None => Ok(None),
        }
    }};
}

/// One request on its way to its handler.
struct Route<'a> {
    ctx: &'a Arc<Ctx>,
    api: ApiKey,
    version: i16,
    header: &'a RequestHeader,
    peer: &'a SocketAddr,
    body: Bytes,
    /// What the connection may do, as of this request.
    access: Access,
    session: &'a mut Session,
}

/// The table of APIs and their handlers, from which both the router and
/// the decode-only check (used by the fuzz targets) are made.
macro_rules! api_table {
    ($($key:ident => $req:ident, $handler:path $(, $session:ident)?;)*) => {
        async fn route(mut r: Route<'_>) -> Answer {
            match r.api {
                $(ApiKey::$key => call!(r, $req, $handler $(, $session)?),)*
                _ => Ok(Some(bare_error(r.header.correlation_id, code::UNSUPPORTED_VERSION))),
            }
        }

        /// Decodes the body of a request of a routed API, and nothing more.
        fn decode_body(api: ApiKey, version: i16, body: &mut Bytes) -> Result<(), String> {
            match api {
                $(ApiKey::$key => m::$req::decode(body, version).map(drop).map_err(|e| e.to_string()),)*
                _ => Ok(()),
            }
        }
    };
}

api_table! {
    SaslHandshake => SaslHandshakeRequest, api::sasl::handshake, session;
    SaslAuthenticate => SaslAuthenticateRequest, api::sasl::authenticate, session;
    ApiVersions => ApiVersionsRequest, api::meta::api_versions;
    Metadata => MetadataRequest, api::meta::metadata;
    Produce => ProduceRequest, api::produce::produce;
    Fetch => FetchRequest, api::fetch::fetch;
    ListOffsets => ListOffsetsRequest, api::offsets::list_offsets;
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, api::offsets::offset_for_leader_epoch;
    OffsetCommit => OffsetCommitRequest, api::offsets::offset_commit;
    OffsetFetch => OffsetFetchRequest, api::offsets::offset_fetch;
    FindCoordinator => FindCoordinatorRequest, api::meta::find_coordinator;
    JoinGroup => JoinGroupRequest, api::groups::join_group;
    SyncGroup => SyncGroupRequest, api::groups::sync_group;
    Heartbeat => HeartbeatRequest, api::groups::heartbeat;
    LeaveGroup => LeaveGroupRequest, api::groups::leave_group;
    ListGroups => ListGroupsRequest, api::groups::list_groups;
    DescribeGroups => DescribeGroupsRequest, api::groups::describe_groups;
    DeleteGroups => DeleteGroupsRequest, api::groups::delete_groups;
    CreateTopics => CreateTopicsRequest, api::topics::create_topics;
    DeleteTopics => DeleteTopicsRequest, api::topics::delete_topics;
    CreatePartitions => CreatePartitionsRequest, api::topics::create_partitions;
    DeleteRecords => DeleteRecordsRequest, api::topics::delete_records;
    DescribeConfigs => DescribeConfigsRequest, api::topics::describe_configs;
    InitProducerId => InitProducerIdRequest, api::topics::init_producer_id;
}

/// Decodes one request frame (without its length prefix) as the server
/// would before handling it: the size, API and version checks, the header,
/// the body. Errors are what would close the connection or be answered
/// with an error code. For fuzzing and tests; it touches no state.
pub fn decode_request(frame: Bytes) -> Result<(), String> {
    if frame.len() < 8 {
        return Err("frame shorter than a request header".to_string());
    }
    let mut raw = frame.clone();
    let key = raw.get_i16();
    let version = raw.get_i16();
    let api = ApiKey::try_from(key).map_err(|()| format!("unknown API key {key}"))?;
    if !supported(api, version) {
        return Err(format!("{api:?} v{version} is not supported"));
    }
    if api != ApiKey::Produce && frame.len() > MAX_OTHER_FRAME_BYTES {
        return Err(format!("{api:?} request of {} bytes", frame.len()));
    }
    let mut body = frame;
    RequestHeader::decode(&mut body, api.request_header_version(version)).map_err(|e| e.to_string())?;
    decode_body(api, version, &mut body)
}

/// The API's name as used in metrics and logs.
pub(crate) fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        _ => "other",
    }
}
