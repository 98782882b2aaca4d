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
use kafka_protocol::ResponseError;

use crate::api;
use crate::auth::{PreAuth, Session};
use crate::authz::Access;
use crate::metrics;
use crate::server::{Ctx, MAX_OTHER_FRAME_BYTES};

/// One API this server answers: a row of [`APIS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api {
    /// The API key.
    pub key: ApiKey,
    /// The API's name, as used in metrics and logs.
    pub name: &'static str,
    /// The oldest version implemented.
    pub min_version: i16,
    /// The newest version implemented.
    pub max_version: i16,
    /// Whether the API may be used before the connection authenticates.
    pub(crate) pre_auth: PreAuth,
}

impl Api {
    /// The row of an API key, if this server answers it.
    pub fn find(key: i16) -> Option<&'static Api> {
        APIS.iter().find(|a| a.key as i16 == key)
    }

    /// True when `version` is one this server implements.
    pub fn supports(&self, version: i16) -> bool {
        (self.min_version..=self.max_version).contains(&version)
    }
}

/// The ApiVersions answer's list.
pub(crate) fn api_list() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|a| {
            let mut v = ApiVersion::default();
            v.api_key = a.key as i16;
            v.min_version = a.min_version;
            v.max_version = a.max_version;
            v
        })
        .collect()
}

/// What a handler knows of the request besides its body.
pub(crate) struct ReqInfo<'a> {
    /// The server.
    pub ctx: &'a Arc<Ctx>,
    /// The request's API version.
    pub version: i16,
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
pub(crate) type Answer = Result<Option<BytesMut>, String>;

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
    let found = Api::find(key);
    if !session.allows(found.map(|a| a.pre_auth)) {
        return Err(format!("request with API key {key} before authentication"));
    }
    let Some(row) = found else {
        let name = if ApiKey::try_from(key).is_ok() {
            "other"
        } else {
            "unknown"
        };
        metrics::request(name, false, 0.0);
        return Ok(Some(unsupported_version(correlation_id)));
    };
    let api = row.key;
    if !row.supports(version) {
        metrics::request(row.name, false, 0.0);
        if api == ApiKey::ApiVersions {
            // Answered in version 0, which every client can read, so that
            // it retries with a version from the list.
            let mut resp = ApiVersionsResponse::default();
            resp.error_code = ResponseError::UnsupportedVersion.code();
            resp.api_keys = api_list();
            return encode(correlation_id, 0, 0, &resp).map(Some);
        }
        return Ok(Some(unsupported_version(correlation_id)));
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
    metrics::request(row.name, answer.is_ok(), started.elapsed().as_secs_f64());
    answer
}

/// A response of only a correlation id and `UNSUPPORTED_VERSION`: what
/// clients read for an API or version the server does not know.
fn unsupported_version(correlation_id: i32) -> BytesMut {
    let mut b = BytesMut::with_capacity(6);
    b.extend_from_slice(&correlation_id.to_be_bytes());
    b.extend_from_slice(&ResponseError::UnsupportedVersion.code().to_be_bytes());
    b
}

pub(crate) fn encode<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    resp: &R,
) -> Result<BytesMut, String> {
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
        let info = ReqInfo { ctx, version, header, peer: $r.peer, access: &$r.access };
        match $handler(&info, req $(, &mut *$r.$session)?).await {
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

/// Makes [`APIS`], the router and the decode-only check (used by the fuzz
/// targets) from one list: each API's key, versions, whether it may come
/// before authentication, request type and handler (given the
/// connection's session when marked `session`).
macro_rules! api_table {
    ($($key:ident $min:literal..=$max:literal, $pre:ident => $req:ident, $handler:path $(, $session:ident)?;)*) => {
        /// Every API this server answers, in the order ApiVersions lists
        /// them.
        pub const APIS: &[Api] = &[
            $(Api {
                key: ApiKey::$key,
                name: stringify!($key),
                min_version: $min,
                max_version: $max,
                pre_auth: PreAuth::$pre,
            },)*
        ];

        async fn route(mut r: Route<'_>) -> Answer {
            match r.api {
                $(ApiKey::$key => call!(r, $req, $handler $(, $session)?),)*
                _ => Ok(Some(unsupported_version(r.header.correlation_id))),
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

// Versions are capped where a newer one needs something pgbroker does not
// have (topic ids in Fetch 13+ and Produce 10+). OffsetCommit 9 carries
// the member epoch of a consumer-protocol member in the generation field;
// OffsetFetch 8 batches groups and 9 adds the member asking. The
// transaction APIs stop
// before transaction version 2 (KIP-890 part 2: AddPartitionsToTxn 4+ is
// broker-to-broker, EndTxn 5 and TxnOffsetCommit 5 return or imply epoch
// bumps per transaction); `transaction.version` is not advertised, so
// Java clients use version 1, as librdkafka always does.
api_table! {
    Produce 3..=9, Never => ProduceRequest, api::produce::produce;
    Fetch 4..=12, Never => FetchRequest, api::fetch::fetch;
    ListOffsets 1..=7, Never => ListOffsetsRequest, api::offsets::list_offsets;
    Metadata 0..=12, Never => MetadataRequest, api::meta::metadata;
    OffsetCommit 2..=9, Never => OffsetCommitRequest, api::offsets::offset_commit;
    OffsetFetch 1..=9, Never => OffsetFetchRequest, api::offsets::offset_fetch;
    FindCoordinator 0..=3, Never => FindCoordinatorRequest, api::meta::find_coordinator;
    JoinGroup 0..=7, Never => JoinGroupRequest, api::groups::join_group;
    Heartbeat 0..=4, Never => HeartbeatRequest, api::groups::heartbeat;
    LeaveGroup 0..=4, Never => LeaveGroupRequest, api::groups::leave_group;
    SyncGroup 0..=5, Never => SyncGroupRequest, api::groups::sync_group;
    DescribeGroups 0..=5, Never => DescribeGroupsRequest, api::groups::describe_groups;
    ListGroups 0..=5, Never => ListGroupsRequest, api::groups::list_groups;
    ApiVersions 0..=3, Opening => ApiVersionsRequest, api::meta::api_versions;
    CreateTopics 2..=7, Never => CreateTopicsRequest, api::topics::create_topics;
    DeleteTopics 1..=5, Never => DeleteTopicsRequest, api::topics::delete_topics;
    DeleteRecords 0..=2, Never => DeleteRecordsRequest, api::topics::delete_records;
    InitProducerId 0..=4, Never => InitProducerIdRequest, api::topics::init_producer_id;
    AddPartitionsToTxn 0..=3, Never => AddPartitionsToTxnRequest, api::txn::add_partitions_to_txn, session;
    AddOffsetsToTxn 0..=3, Never => AddOffsetsToTxnRequest, api::txn::add_offsets_to_txn, session;
    EndTxn 0..=3, Never => EndTxnRequest, api::txn::end_txn, session;
    TxnOffsetCommit 0..=3, Never => TxnOffsetCommitRequest, api::txn::txn_offset_commit;
    DescribeTransactions 0..=0, Never => DescribeTransactionsRequest, api::txn_admin::describe_transactions;
    ListTransactions 0..=1, Never => ListTransactionsRequest, api::txn_admin::list_transactions;
    DescribeProducers 0..=0, Never => DescribeProducersRequest, api::txn_admin::describe_producers;
    OffsetForLeaderEpoch 2..=4, Never => OffsetForLeaderEpochRequest, api::offsets::offset_for_leader_epoch;
    DescribeConfigs 1..=4, Never => DescribeConfigsRequest, api::configs::describe_configs;
    AlterConfigs 0..=2, Never => AlterConfigsRequest, api::configs::alter_configs;
    IncrementalAlterConfigs 0..=1, Never => IncrementalAlterConfigsRequest, api::configs::incremental_alter_configs;
    CreatePartitions 0..=3, Never => CreatePartitionsRequest, api::topics::create_partitions;
    DeleteGroups 0..=2, Never => DeleteGroupsRequest, api::groups::delete_groups;
    ConsumerGroupHeartbeat 0..=1, Never => ConsumerGroupHeartbeatRequest, api::consumer_groups::consumer_group_heartbeat, session;
    ConsumerGroupDescribe 0..=1, Never => ConsumerGroupDescribeRequest, api::consumer_groups::consumer_group_describe;
    ShareGroupHeartbeat 1..=1, Never => ShareGroupHeartbeatRequest, api::share_groups::share_group_heartbeat;
    ShareGroupDescribe 1..=1, Never => ShareGroupDescribeRequest, api::share_groups::share_group_describe;
    ShareFetch 1..=1, Never => ShareFetchRequest, api::share_fetch::share_fetch;
    ShareAcknowledge 1..=1, Never => ShareAcknowledgeRequest, api::share_fetch::share_acknowledge;
    SaslHandshake 0..=1, Opening => SaslHandshakeRequest, api::sasl::handshake, session;
    SaslAuthenticate 0..=2, Exchange => SaslAuthenticateRequest, api::sasl::authenticate, session;
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
    let row = Api::find(key).ok_or_else(|| format!("unknown API key {key}"))?;
    let api = row.key;
    if !row.supports(version) {
        return Err(format!("{api:?} v{version} is not supported"));
    }
    if api != ApiKey::Produce && frame.len() > MAX_OTHER_FRAME_BYTES {
        return Err(format!("{api:?} request of {} bytes", frame.len()));
    }
    let mut body = frame;
    RequestHeader::decode(&mut body, api.request_header_version(version)).map_err(|e| e.to_string())?;
    decode_body(api, version, &mut body)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn api_versions_advertises_the_table() {
        let advertised: Vec<(i16, i16, i16)> = api_list()
            .iter()
            .map(|v| (v.api_key, v.min_version, v.max_version))
            .collect();
        let table: Vec<(i16, i16, i16)> = APIS
            .iter()
            .map(|a| (a.key as i16, a.min_version, a.max_version))
            .collect();
        assert_eq!(advertised, table);
        let keys: HashSet<i16> = advertised.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(keys.len(), APIS.len(), "each API once");
    }

    #[test]
    fn every_row_is_a_valid_range_named_after_its_key() {
        for a in APIS {
            let known = a.key.valid_versions();
            assert!(a.min_version <= a.max_version, "{}", a.name);
            assert!(known.min <= a.min_version && a.max_version <= known.max, "{}", a.name);
            assert_eq!(a.name, format!("{:?}", a.key));
            assert_eq!(Api::find(a.key as i16), Some(a));
            assert!(a.supports(a.min_version) && a.supports(a.max_version));
            assert!(!a.supports(a.max_version + 1), "{}", a.name);
        }
        assert_eq!(Api::find(ApiKey::ElectLeaders as i16), None);
        assert_eq!(Api::find(999), None);
    }

    #[test]
    fn only_the_sasl_opening_and_exchange_come_before_authentication() {
        let before: Vec<(ApiKey, PreAuth)> = APIS
            .iter()
            .filter(|a| a.pre_auth != PreAuth::Never)
            .map(|a| (a.key, a.pre_auth))
            .collect();
        assert_eq!(
            before,
            [
                (ApiKey::ApiVersions, PreAuth::Opening),
                (ApiKey::SaslHandshake, PreAuth::Opening),
                (ApiKey::SaslAuthenticate, PreAuth::Exchange),
            ]
        );
    }
}
