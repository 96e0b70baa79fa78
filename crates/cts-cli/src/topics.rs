//! Topics, their subscriptions and the delivery status of their messages
//! (`cts topics`), over the SMN-shaped `/v2/{project_id}/notifications` API.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::enc;
use crate::ctx::{Column, Ctx};

const TOPIC_COLUMNS: &[Column] = &[
    ("TOPIC_URN", "/topic_urn"),
    ("NAME", "/name"),
    ("DISPLAY_NAME", "/display_name"),
    ("KIND", "/kind"),
    ("CREATED", "/create_time"),
];

const SUBSCRIPTION_COLUMNS: &[Column] = &[
    ("SUBSCRIPTION_URN", "/subscription_urn"),
    ("PROTOCOL", "/protocol"),
    ("ENDPOINT", "/endpoint"),
    ("REMARK", "/remark"),
    ("CREATED", "/create_time"),
];

/// A new subscription: the secret is shown this once.
const NEW_SUBSCRIPTION_COLUMNS: &[Column] = &[
    ("SUBSCRIPTION_URN", "/subscription_urn"),
    ("SECRET", "/secret"),
];

const DELIVERY_COLUMNS: &[Column] = &[
    ("MESSAGE_ID", "/message_id"),
    ("STATE", "/state"),
    ("ATTEMPTS", "/attempts"),
    ("NOTIFICATION", "/notification_name"),
    ("SUBSCRIPTION_URN", "/subscription_urn"),
    ("CREATED", "/create_time"),
    ("NEXT_ATTEMPT", "/next_attempt_time"),
    ("LAST_ERROR", "/last_error"),
];

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// List the project's topics (and registered functions).
    List,
    /// Create a topic, or register a FunctionGraph function URN as one.
    Create {
        /// Topic name: letters, digits, - and _.
        #[arg(required_unless_present = "function")]
        name: Option<String>,
        #[arg(long, conflicts_with = "function")]
        display_name: Option<String>,
        /// urn:fss:{region}:{project_id}:function:{package}:{name}[:{version}]
        #[arg(long, value_name = "FUNCTION_URN", conflicts_with = "name")]
        function: Option<String>,
    },
    /// Delete a topic with its subscriptions and undelivered messages.
    Delete { topic_urn: String },
    /// A topic's subscriptions.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Messages per subscription with their state (pending, delivered, dead),
    /// newest first.
    Deliveries {
        /// Only this subscription's.
        #[arg(long, value_name = "SUBSCRIPTION_URN")]
        subscription: Option<String>,
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// List a topic's subscriptions.
    List { topic_urn: String },
    /// Subscribe an endpoint; prints its signing secret (shown only now).
    Add {
        topic_urn: String,
        #[arg(value_parser = ["http", "https", "email"])]
        protocol: String,
        /// The URL, or the e-mail address (`target`: the global
        /// `--endpoint` is the CTS server's).
        #[arg(value_name = "ENDPOINT")]
        target: String,
        #[arg(long, default_value = "")]
        remark: String,
    },
    /// Remove a subscription and its undelivered messages.
    Remove { subscription_urn: String },
}

impl Ctx<'_> {
    /// `/v2/{project_id}/notifications{rest}`.
    fn notifications_path(&self, rest: &str) -> Result<String> {
        Ok(format!(
            "/v2/{}/notifications{rest}",
            enc(self.creds.project()?)
        ))
    }
}

pub fn topics(c: &Ctx, cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::List => {
            let topics = c.get_list(&c.notifications_path("/topics")?, &[], "topics")?;
            c.print_list(TOPIC_COLUMNS, &topics)
        }
        TopicsCommand::Create {
            name,
            display_name,
            function,
        } => {
            let body = match function {
                Some(urn) => json!({ "function_urn": urn }),
                None => json!({"name": name, "display_name": display_name.unwrap_or_default()}),
            };
            let path = c.notifications_path("/topics")?;
            let reply = c.client.call("POST", &path, &[], Some(&body))?;
            c.print_one(&[("TOPIC_URN", "/topic_urn")], &reply.body)
        }
        TopicsCommand::Delete { topic_urn } => {
            let path = c.notifications_path(&format!("/topics/{}", enc(&topic_urn)))?;
            c.client.call("DELETE", &path, &[], None)?;
            c.done(format!("deleted topic {topic_urn}"))
        }
        TopicsCommand::Subscriptions(cmd) => subscriptions(c, cmd),
        TopicsCommand::Deliveries {
            subscription,
            state,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(subscription.map(|s| ("subscription_urn", s)));
            query.extend(state.map(|s| ("state", s)));
            let path = c.notifications_path("/deliveries")?;
            let found: Vec<Value> = c.get_list(&path, &query, "deliveries")?;
            c.print_list(DELIVERY_COLUMNS, &found)
        }
    }
}

fn subscriptions(c: &Ctx, cmd: SubscriptionsCommand) -> Result<()> {
    let of_topic = |urn: &str| c.notifications_path(&format!("/topics/{}/subscriptions", enc(urn)));
    match cmd {
        SubscriptionsCommand::List { topic_urn } => {
            let subs = c.get_list(&of_topic(&topic_urn)?, &[], "subscriptions")?;
            c.print_list(SUBSCRIPTION_COLUMNS, &subs)
        }
        SubscriptionsCommand::Add {
            topic_urn,
            protocol,
            target,
            remark,
        } => {
            let body = json!({"protocol": protocol, "endpoint": target, "remark": remark});
            let reply = c
                .client
                .call("POST", &of_topic(&topic_urn)?, &[], Some(&body))?;
            c.print_one(NEW_SUBSCRIPTION_COLUMNS, &reply.body)
        }
        SubscriptionsCommand::Remove { subscription_urn } => {
            let path =
                c.notifications_path(&format!("/subscriptions/{}", enc(&subscription_urn)))?;
            c.client.call("DELETE", &path, &[], None)?;
            c.done(format!("removed subscription {subscription_urn}"))
        }
    }
}
