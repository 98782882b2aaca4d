//! Access control lists for the users of the Kafka and SQS listeners:
//! which user may produce to, consume from or administer which topics and
//! queues, and use or administer which consumer groups.
//!
//! A grant ([`Acl`]) gives one user one [`Permission`] on one
//! [`AclResource`]: a topic, a queue or a group, named exactly or by a name
//! prefix
//! (the empty prefix matches every name). Grants only allow; there are no
//! deny rules, and a user without a matching grant is refused. The rights
//! of one user, loaded once, are a [`UserAcls`], which answers checks
//! without touching the database.
//!
//! Names are validated by the same rules as topic names, group ids and user
//! names, and are always bound as parameters.

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeStruct as _;
use serde::{Serialize, Serializer};

use crate::auth::users::validate_user_name;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::queues::QueueName;
use crate::types::{GroupId, TopicName};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Write records to a topic (Kafka's WRITE), or send messages to a
    /// queue.
    Produce,
    /// Read records and offsets of a topic (Kafka's READ), or receive,
    /// delete and change the visibility of a queue's messages.
    Consume,
    /// Be a member of a consumer group and commit its offsets (Kafka's
    /// READ on a group).
    Group,
    /// Create, delete, grow, truncate and describe the configuration of a
    /// topic, or delete a group (Kafka's CREATE, DELETE, ALTER,
    /// DESCRIBE_CONFIGS); create, delete, purge and set the attributes of
    /// a queue.
    Admin,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Permission; 4] = [
        Permission::Produce,
        Permission::Consume,
        Permission::Group,
        Permission::Admin,
    ];

    /// The permission's name: `produce`, `consume`, `group` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Produce => "produce",
            Permission::Consume => "consume",
            Permission::Group => "group",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            Error::invalid(
                Invalid::Permission,
                format!("{s:?} is not one of produce, consume, group, admin"),
            )
        })
    }
}

/// Longest topic prefix, in bytes: a topic name's limit.
const MAX_TOPIC_PREFIX: usize = 249;
/// Longest group prefix, in bytes: a group id's limit.
const MAX_GROUP_PREFIX: usize = 255;

/// What a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclResource {
    /// One topic, by name.
    Topic(String),
    /// Every topic whose name starts with this prefix (all of them when
    /// empty).
    TopicPrefix(String),
    /// One consumer group, by id.
    Group(String),
    /// Every group whose id starts with this prefix (all of them when
    /// empty).
    GroupPrefix(String),
    /// One queue, by name.
    Queue(String),
    /// Every queue whose name starts with this prefix (all of them when
    /// empty).
    QueuePrefix(String),
}

impl AclResource {
    /// One topic; the name must be a valid topic name.
    pub fn topic(name: &str) -> Result<AclResource> {
        Ok(AclResource::Topic(TopicName::new(name)?.to_string()))
    }

    /// Topics by prefix: up to 249 characters from a topic name's alphabet,
    /// possibly none.
    pub fn topic_prefix(prefix: &str) -> Result<AclResource> {
        validate_topic_prefix(prefix)?;
        Ok(AclResource::TopicPrefix(prefix.to_string()))
    }

    /// One group; the id must be a valid group id.
    pub fn group(id: &str) -> Result<AclResource> {
        Ok(AclResource::Group(GroupId::new(id)?.to_string()))
    }

    /// Groups by prefix: up to 255 bytes without control characters,
    /// possibly none.
    pub fn group_prefix(prefix: &str) -> Result<AclResource> {
        validate_group_prefix(prefix)?;
        Ok(AclResource::GroupPrefix(prefix.to_string()))
    }

    /// One queue; the name must be a valid queue name.
    pub fn queue(name: &str) -> Result<AclResource> {
        Ok(AclResource::Queue(QueueName::new(name)?.to_string()))
    }

    /// Queues by prefix: up to 249 characters from a queue name's alphabet,
    /// possibly none.
    pub fn queue_prefix(prefix: &str) -> Result<AclResource> {
        validate_topic_prefix(prefix).map_err(|e| match e {
            Error::Invalid { reason, .. } => Error::invalid(Invalid::QueuePrefix, reason),
            other => other,
        })?;
        Ok(AclResource::QueuePrefix(prefix.to_string()))
    }

    /// `topic`, `group` or `queue`.
    pub fn resource_type(&self) -> &'static str {
        match self {
            AclResource::Topic(_) | AclResource::TopicPrefix(_) => "topic",
            AclResource::Group(_) | AclResource::GroupPrefix(_) => "group",
            AclResource::Queue(_) | AclResource::QueuePrefix(_) => "queue",
        }
    }

    /// `literal` or `prefix`.
    pub fn pattern(&self) -> &'static str {
        match self {
            AclResource::Topic(_) | AclResource::Group(_) | AclResource::Queue(_) => "literal",
            AclResource::TopicPrefix(_) | AclResource::GroupPrefix(_) | AclResource::QueuePrefix(_) => "prefix",
        }
    }

    /// The name or prefix.
    pub fn name(&self) -> &str {
        match self {
            AclResource::Topic(n)
            | AclResource::TopicPrefix(n)
            | AclResource::Group(n)
            | AclResource::GroupPrefix(n)
            | AclResource::Queue(n)
            | AclResource::QueuePrefix(n) => n,
        }
    }

    /// Checks the name or prefix by the rules of its kind.
    pub fn validate(&self) -> Result<()> {
        match self {
            AclResource::Topic(n) => TopicName::new(n.as_str()).map(drop),
            AclResource::TopicPrefix(p) => validate_topic_prefix(p),
            AclResource::Group(n) => GroupId::new(n.as_str()).map(drop),
            AclResource::GroupPrefix(p) => validate_group_prefix(p),
            AclResource::Queue(n) => QueueName::new(n.as_str()).map(drop),
            AclResource::QueuePrefix(p) => AclResource::queue_prefix(p).map(drop),
        }
    }

    fn from_parts(resource_type: &str, pattern: &str, name: String) -> Option<AclResource> {
        match (resource_type, pattern) {
            ("topic", "literal") => Some(AclResource::Topic(name)),
            ("topic", "prefix") => Some(AclResource::TopicPrefix(name)),
            ("group", "literal") => Some(AclResource::Group(name)),
            ("group", "prefix") => Some(AclResource::GroupPrefix(name)),
            ("queue", "literal") => Some(AclResource::Queue(name)),
            ("queue", "prefix") => Some(AclResource::QueuePrefix(name)),
            _ => None,
        }
    }

    fn matches_topic(&self, topic: &str) -> bool {
        match self {
            AclResource::Topic(n) => n == topic,
            AclResource::TopicPrefix(p) => topic.starts_with(p.as_str()),
            _ => false,
        }
    }

    fn matches_group(&self, group: &str) -> bool {
        match self {
            AclResource::Group(n) => n == group,
            AclResource::GroupPrefix(p) => group.starts_with(p.as_str()),
            _ => false,
        }
    }

    fn matches_queue(&self, queue: &str) -> bool {
        match self {
            AclResource::Queue(n) => n == queue,
            AclResource::QueuePrefix(p) => queue.starts_with(p.as_str()),
            _ => false,
        }
    }
}

impl fmt::Display for AclResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclResource::Topic(n) => write!(f, "topic {n:?}"),
            AclResource::TopicPrefix(p) => write!(f, "topics with prefix {p:?}"),
            AclResource::Group(n) => write!(f, "group {n:?}"),
            AclResource::GroupPrefix(p) => write!(f, "groups with prefix {p:?}"),
            AclResource::Queue(n) => write!(f, "queue {n:?}"),
            AclResource::QueuePrefix(p) => write!(f, "queues with prefix {p:?}"),
        }
    }
}

fn validate_topic_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_TOPIC_PREFIX {
        return Err(Error::invalid(
            Invalid::TopicPrefix,
            format!(
                "must be at most {MAX_TOPIC_PREFIX} characters long, got {}",
                prefix.len()
            ),
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(
            Invalid::TopicPrefix,
            format!("{c:?} is not allowed; use letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

fn validate_group_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_GROUP_PREFIX {
        return Err(Error::invalid(
            Invalid::GroupPrefix,
            format!("must be at most {MAX_GROUP_PREFIX} bytes long, got {}", prefix.len()),
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(Error::invalid(
            Invalid::GroupPrefix,
            "control characters are not allowed",
        ));
    }
    Ok(())
}

/// One grant: `user` may do `permission` on `resource`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    /// The user granted.
    pub user: String,
    /// What is allowed.
    pub permission: Permission,
    /// On what.
    pub resource: AclResource,
}

impl Acl {
    /// A validated grant. `produce` and `consume` apply to topics and
    /// queues, `group` to groups, `admin` to any of them.
    pub fn new(user: &str, permission: Permission, resource: AclResource) -> Result<Acl> {
        let acl = Acl {
            user: user.to_string(),
            permission,
            resource,
        };
        acl.validate()?;
        Ok(acl)
    }

    /// Checks the user name, the resource, and that the permission applies
    /// to the resource's kind.
    pub fn validate(&self) -> Result<()> {
        validate_user_name(&self.user)?;
        self.resource.validate()?;
        let fits = match self.permission {
            Permission::Produce | Permission::Consume => self.resource.resource_type() != "group",
            Permission::Group => self.resource.resource_type() == "group",
            Permission::Admin => true,
        };
        if !fits {
            let applies = match self.permission {
                Permission::Group => "groups (--group or --group-prefix)",
                _ => "topics and queues (--topic, --topic-prefix, --queue, --queue-prefix)",
            };
            return Err(Error::invalid(
                Invalid::Acl,
                format!(
                    "the {} permission applies to {applies}, not to {}",
                    self.permission, self.resource
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} may {} on {}", self.user, self.permission, self.resource)
    }
}

impl Serialize for Acl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Acl", 5)?;
        st.serialize_field("user", &self.user)?;
        st.serialize_field("permission", self.permission.as_str())?;
        st.serialize_field("resource_type", self.resource.resource_type())?;
        st.serialize_field("pattern", self.resource.pattern())?;
        st.serialize_field("name", self.resource.name())?;
        st.end()
    }
}

/// The grants of one user, held in memory: every check is a scan of a
/// short list, without a database round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAcls {
    rules: Vec<(Permission, AclResource)>,
}

impl UserAcls {
    /// The rights these grants give; the caller passes one user's grants.
    pub fn from_acls(acls: impl IntoIterator<Item = Acl>) -> UserAcls {
        UserAcls {
            rules: acls.into_iter().map(|a| (a.permission, a.resource)).collect(),
        }
    }

    /// True when `permission` is granted on topic `topic`.
    pub fn allows_topic(&self, permission: Permission, topic: &str) -> bool {
        self.rules
            .iter()
            .any(|(p, r)| *p == permission && r.matches_topic(topic))
    }

    /// True when any permission is granted on topic `topic`.
    pub fn any_on_topic(&self, topic: &str) -> bool {
        self.rules.iter().any(|(_, r)| r.matches_topic(topic))
    }

    /// True when `permission` is granted on group `group`.
    pub fn allows_group(&self, permission: Permission, group: &str) -> bool {
        self.rules
            .iter()
            .any(|(p, r)| *p == permission && r.matches_group(group))
    }

    /// True when any permission is granted on group `group`.
    pub fn any_on_group(&self, group: &str) -> bool {
        self.rules.iter().any(|(_, r)| r.matches_group(group))
    }

    /// True when `permission` is granted on queue `queue`.
    pub fn allows_queue(&self, permission: Permission, queue: &str) -> bool {
        self.rules
            .iter()
            .any(|(p, r)| *p == permission && r.matches_queue(queue))
    }

    /// True when any permission is granted on queue `queue`.
    pub fn any_on_queue(&self, queue: &str) -> bool {
        self.rules.iter().any(|(_, r)| r.matches_queue(queue))
    }

    /// True when `permission` is granted on anything.
    pub fn has(&self, permission: Permission) -> bool {
        self.rules.iter().any(|(p, _)| *p == permission)
    }

    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Grants `acl`. Returns true when it is new, false when it was
/// already granted; [`Error::UnknownUser`] when the user does not exist.
pub(crate) async fn grant(broker: &Broker, acl: &Acl) -> Result<bool> {
    acl.validate()?;
    let client = broker.client().await?;
    let row = client
        .query_one(
            &broker.inner.sql.auth.grant,
            &[
                &acl.user,
                &acl.permission.as_str(),
                &acl.resource.resource_type(),
                &acl.resource.pattern(),
                &acl.resource.name(),
            ],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Err(Error::UnknownUser(acl.user.clone()));
    }
    Ok(row.get(1))
}

/// Revokes `acl`: [`Error::UnknownUser`] when the user does not exist,
/// [`Error::UnknownAcl`] when it was not granted.
pub(crate) async fn revoke(broker: &Broker, acl: &Acl) -> Result<()> {
    acl.validate()?;
    let client = broker.client().await?;
    let row = client
        .query_one(
            &broker.inner.sql.auth.revoke,
            &[
                &acl.user,
                &acl.permission.as_str(),
                &acl.resource.resource_type(),
                &acl.resource.pattern(),
                &acl.resource.name(),
            ],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Err(Error::UnknownUser(acl.user.clone()));
    }
    if !row.get::<_, bool>(1) {
        return Err(Error::UnknownAcl(acl.to_string()));
    }
    Ok(())
}

/// Every grant, or those of one user ([`Error::UnknownUser`] when the
/// user does not exist), by user, resource and permission.
pub(crate) async fn list_acls(broker: &Broker, user: Option<&str>) -> Result<Vec<Acl>> {
    let client = broker.client().await?;
    if let Some(user) = user {
        validate_user_name(user)?;
        let exists = client.query_opt(&broker.inner.sql.auth.user_exists, &[&user]).await?;
        if exists.is_none() {
            return Err(Error::UnknownUser(user.to_string()));
        }
    }
    let rows = client.query(&broker.inner.sql.auth.list_acls, &[&user]).await?;
    let mut acls = Vec::with_capacity(rows.len());
    for r in rows {
        let permission: Permission = r.get::<_, String>(1).parse()?;
        let resource = AclResource::from_parts(r.get(2), r.get(3), r.get(4))
            .ok_or_else(|| Error::invalid(Invalid::Acl, "unknown resource type or pattern in the acls table"))?;
        acls.push(Acl {
            user: r.get(0),
            permission,
            resource,
        });
    }
    Ok(acls)
}

/// The grants in rows of (permission, resource type, pattern, name), as
/// rights to check in memory.
pub(crate) fn grants_of(rows: &[tokio_postgres::Row]) -> Result<UserAcls> {
    let mut rules = Vec::with_capacity(rows.len());
    for r in rows {
        let permission: Permission = r.get::<_, String>(0).parse()?;
        let resource = AclResource::from_parts(r.get(1), r.get(2), r.get(3))
            .ok_or_else(|| Error::invalid(Invalid::Acl, "unknown resource type or pattern in the acls table"))?;
        rules.push((permission, resource));
    }
    Ok(UserAcls { rules })
}

/// The rights of `user`, to check requests against in memory. A user
/// without grants (or without an account) has none.
pub(crate) async fn user_acls(broker: &Broker, user: &str) -> Result<UserAcls> {
    if validate_user_name(user).is_err() {
        return Ok(UserAcls::default());
    }
    Ok(UserAcls::from_acls(broker.auth().list_acls(Some(user)).await.or_else(
        |e| match e {
            Error::UnknownUser(_) => Ok(Vec::new()),
            other => Err(other),
        },
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_validated() {
        assert!(AclResource::topic("orders").is_ok());
        assert!(AclResource::topic("").is_err());
        assert!(AclResource::topic("bad name").is_err());
        assert!(AclResource::topic_prefix("").is_ok());
        assert!(AclResource::topic_prefix("orders.").is_ok());
        assert!(AclResource::topic_prefix("a;DROP").is_err());
        assert!(AclResource::topic_prefix(&"x".repeat(250)).is_err());
        assert!(AclResource::group("g 1").is_ok());
        assert!(AclResource::group("").is_err());
        assert!(AclResource::group_prefix("tab\t").is_err());
        assert!(AclResource::group_prefix("").is_ok());
        assert!(AclResource::queue("jobs.fifo").is_ok());
        assert!(AclResource::queue("").is_err());
        assert!(AclResource::queue("a/b").is_err());
        assert!(AclResource::queue_prefix("").is_ok());
        assert!(AclResource::queue_prefix("jobs-").is_ok());
        assert!(AclResource::queue_prefix("x' OR 1=1").is_err());
    }

    #[test]
    fn permissions_fit_their_resources() {
        let topic = AclResource::topic("t").expect("topic");
        let group = AclResource::group("g").expect("group");
        assert!(Acl::new("alice", Permission::Produce, topic.clone()).is_ok());
        assert!(Acl::new("alice", Permission::Consume, group.clone()).is_err());
        assert!(Acl::new("alice", Permission::Group, topic.clone()).is_err());
        assert!(Acl::new("alice", Permission::Group, group.clone()).is_ok());
        assert!(Acl::new("alice", Permission::Admin, group).is_ok());
        let queue = AclResource::queue("jobs").expect("queue");
        assert!(Acl::new("alice", Permission::Produce, queue.clone()).is_ok());
        assert!(Acl::new("alice", Permission::Consume, queue.clone()).is_ok());
        assert!(Acl::new("alice", Permission::Admin, queue.clone()).is_ok());
        assert!(Acl::new("alice", Permission::Group, queue).is_err());
        assert!(Acl::new("a,b", Permission::Admin, topic).is_err());
        assert!("write".parse::<Permission>().is_err());
        assert_eq!("consume".parse::<Permission>().expect("known"), Permission::Consume);
    }

    #[test]
    fn matching() {
        let acls = UserAcls::from_acls([
            Acl::new("u", Permission::Produce, AclResource::topic("orders").expect("t")).expect("acl"),
            Acl::new("u", Permission::Consume, AclResource::topic_prefix("logs.").expect("p")).expect("acl"),
            Acl::new("u", Permission::Group, AclResource::group_prefix("app-").expect("p")).expect("acl"),
        ]);
        assert!(acls.allows_topic(Permission::Produce, "orders"));
        assert!(!acls.allows_topic(Permission::Produce, "orders2"));
        assert!(!acls.allows_topic(Permission::Consume, "orders"));
        assert!(acls.allows_topic(Permission::Consume, "logs.web"));
        assert!(!acls.allows_topic(Permission::Consume, "logs"));
        assert!(acls.any_on_topic("orders") && !acls.any_on_topic("other"));
        assert!(acls.allows_group(Permission::Group, "app-1"));
        assert!(
            !acls.allows_group(Permission::Group, "orders"),
            "topic grants say nothing of groups"
        );
        assert!(!acls.any_on_topic("app-1"), "group grants say nothing of topics");
        assert!(acls.has(Permission::Produce) && !acls.has(Permission::Admin));
        assert!(!acls.any_on_queue("orders"), "topic grants say nothing of queues");
        let queues = UserAcls::from_acls([
            Acl::new("u", Permission::Produce, AclResource::queue("jobs").expect("q")).expect("acl"),
            Acl::new("u", Permission::Consume, AclResource::queue_prefix("work-").expect("p")).expect("acl"),
        ]);
        assert!(queues.allows_queue(Permission::Produce, "jobs"));
        assert!(!queues.allows_queue(Permission::Consume, "jobs"));
        assert!(queues.allows_queue(Permission::Consume, "work-1"));
        assert!(
            !queues.allows_topic(Permission::Produce, "jobs"),
            "queue grants say nothing of topics"
        );
        assert!(queues.any_on_queue("jobs") && !queues.any_on_queue("jobs2"));
        let everything =
            UserAcls::from_acls([
                Acl::new("u", Permission::Admin, AclResource::topic_prefix("").expect("p")).expect("acl"),
            ]);
        assert!(everything.allows_topic(Permission::Admin, "anything"));
    }
}
