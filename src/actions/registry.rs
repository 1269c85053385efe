//! The registry of actions: every action of the product by name, the backends they run
//! on, and one entry point that validates and runs an action by name.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use serde_json::Value;

use super::{
    Action, ActionBackend, ActionContext, ActionKind, Backends, Family,
    catalog::{
        CreateContact, CreateDingTalkEvent, CreateDingTalkTodo, CreateOutlookEvent, CreateTask,
        FindEvent, FindMail, MarkRead, SendDingTalkMail, SendDingTalkMessage, SendMail,
    },
};
use crate::{
    apikeys::Principal,
    config::Config,
    error::{ApiError, ErrorCode},
    store::SharedStore,
};

/// An [`Action`] with its input type erased, so that one map holds them all.
#[async_trait]
trait DynAction: Send + Sync {
    fn kind(&self) -> ActionKind;
    async fn call(&self, ctx: &ActionContext<'_>, raw: &Value) -> Result<Value, ApiError>;
}

#[async_trait]
impl<A: Action> DynAction for A {
    fn kind(&self) -> ActionKind {
        A::KIND
    }

    async fn call(&self, ctx: &ActionContext<'_>, raw: &Value) -> Result<Value, ApiError> {
        let input = self.validate(raw).map_err(ApiError::invalid_fields)?;
        let out = self.run(ctx, input).await?;
        match (A::KIND, &out) {
            (ActionKind::Create, Value::Object(_)) | (ActionKind::Search, Value::Array(_)) => {
                Ok(out)
            }
            _ => Err(ApiError::internal(format!(
                "action {} answered the wrong JSON type",
                A::NAME
            ))),
        }
    }
}

/// The action registry.
pub struct Actions {
    map: BTreeMap<&'static str, Box<dyn DynAction>>,
    backends: Backends,
    store: SharedStore,
}

impl Actions {
    /// Every action of the product, no backend set, budgets kept in this process until
    /// [`Actions::set_store`].
    pub fn standard() -> Actions {
        let mut a = Actions {
            map: BTreeMap::new(),
            backends: Backends::default(),
            store: Arc::new(crate::store::memory::MemoryStore::new(0)),
        };
        a.register(SendMail);
        a.register(CreateOutlookEvent);
        a.register(CreateContact);
        a.register(CreateTask);
        a.register(MarkRead);
        a.register(FindMail);
        a.register(FindEvent);
        a.register(SendDingTalkMessage);
        a.register(CreateDingTalkEvent);
        a.register(CreateDingTalkTodo);
        a.register(SendDingTalkMail);
        a
    }

    /// Adds (or replaces) an action.
    pub fn register<A: Action>(&mut self, action: A) {
        self.map.insert(A::NAME, Box::new(action));
    }

    /// Connects the Graph or DingTalk client.
    pub fn set_backend(&mut self, family: Family, backend: Arc<dyn ActionBackend>) {
        match family {
            Family::Outlook => self.backends.outlook = Some(backend),
            Family::DingTalk => self.backends.dingtalk = Some(backend),
        }
    }

    /// Keeps shared budgets (a custom robot's messages a minute) in `store`, which the
    /// relays and other instances use too.
    pub fn set_store(&mut self, store: SharedStore) {
        self.store = store;
    }

    /// Names and kinds, sorted.
    pub fn list(&self) -> Vec<(&'static str, ActionKind)> {
        self.map.iter().map(|(n, a)| (*n, a.kind())).collect()
    }

    /// `true` when `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Validates and runs `name`.
    pub async fn run(
        &self,
        name: &str,
        config: &Config,
        http: &reqwest::Client,
        caller: &Principal,
        idempotency_key: Option<&str>,
        input: &Value,
    ) -> Result<Value, ApiError> {
        let action = self.map.get(name).ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, format!("no action named `{name}`"))
        })?;
        let ctx = ActionContext {
            config,
            http,
            caller,
            idempotency_key,
            store: &self.store,
            backends: &self.backends,
        };
        action.call(&ctx, input).await
    }
}
