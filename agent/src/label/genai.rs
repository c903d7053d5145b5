//! Names GenAI calls (issue 13): their provider and, for metrics, their
//! model under a per-provider cap.
//!
//! The provider of an upstream call is the `[[genai.provider]]` whose
//! `upstream` is the call's peer, else the first whose `hosts` match the
//! request's Host header, else [`GenAiCall::default_provider`] (the vendor
//! its answer's headers name, else the one whose API shape the path has).
//! Calls by a path shape ordinary APIs share are GenAI calls only when
//! confirmed ([`Providers::confirms`]). Prices are looked up by provider name
//! and model, so a provider section without `upstream` or `hosts` prices the
//! calls labelled with its name by default (`name = "openai"`).
//!
//! Model names come from traffic: each provider keeps at most `max_models`
//! distinct names as labels; later ones are labelled [`OTHER`] and reported
//! as overflow, as routes are (routes.rs). Memory is bounded by the
//! providers (configured ones plus the three defaults) times that cap times
//! [`MAX_MODEL_BYTES`].

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use rustc_hash::{FxHashMap, FxHashSet};

use super::routes::{strip_port, HostPattern, OTHER};
use crate::{
    config::{Config, Price},
    http::genai::GenAiCall,
};

/// The model label of a call whose model was seen nowhere.
pub const UNKNOWN_MODEL: &str = "unknown";
/// Longer model names are cut (at a character boundary) before they become
/// labels: the traffic chooses them.
pub const MAX_MODEL_BYTES: usize = 256;

#[derive(Debug)]
struct Entry {
    name: Box<str>,
    hosts: Vec<HostPattern>,
    prices: FxHashMap<Box<str>, Price>,
}

/// The `[[genai.provider]]` sections, read-only once built; shared by the
/// sinks that name a call's provider (metrics, request log, spans).
#[derive(Debug, Default)]
pub struct Providers {
    entries: Vec<Entry>,
    by_upstream: FxHashMap<SocketAddr, usize>,
}

impl Providers {
    /// The section whose `upstream` is `peer`, else the first whose `hosts`
    /// match `host`.
    fn named(&self, peer: SocketAddr, host: Option<&str>) -> Option<&Entry> {
        self.by_upstream
            .get(&peer)
            .map(|&i| &self.entries[i])
            .or_else(|| {
                let host = strip_port(host?);
                self.entries
                    .iter()
                    .find(|e| e.hosts.iter().any(|p| p.matches(host)))
            })
    }

    /// Whether `call`, to `peer` with `host`, is a GenAI call: a candidate
    /// ([`GenAiCall::candidate`]) only when its answer named a vendor or a
    /// section names its upstream or host.
    pub fn confirms(&self, call: &GenAiCall, peer: SocketAddr, host: Option<&str>) -> bool {
        !call.candidate || call.vendor.is_some() || self.named(peer, host).is_some()
    }
}

/// A call's provider: its name, and the configured section when one names
/// it (for prices).
#[derive(Clone, Copy, Debug)]
pub struct Provider<'a> {
    pub name: &'a str,
    entry: Option<&'a Entry>,
}

impl Provider<'_> {
    /// The price of `model` (the request's, else the response's: see
    /// [`crate::http::genai::GenAiCall::model`]) when configured.
    pub fn price(&self, model: Option<&str>) -> Option<Price> {
        self.entry?.prices.get(model?).copied()
    }

    /// The cost of `input` and `output` tokens at `price`, as Kong computes
    /// it: per million tokens.
    pub fn cost(price: Price, input: u64, output: u64) -> f64 {
        (input as f64 * price.input_per_million + output as f64 * price.output_per_million) / 1e6
    }
}

impl Providers {
    pub fn from_config(config: Option<&Config>) -> Self {
        let mut providers = Providers::default();
        let Some(config) = config else {
            return providers;
        };
        for (i, p) in config.genai.providers.iter().enumerate() {
            for addr in &p.upstreams {
                providers.by_upstream.entry(*addr).or_insert(i);
            }
            providers.entries.push(Entry {
                name: p.name.as_str().into(),
                hosts: p.hosts.iter().map(|h| HostPattern::new(h)).collect(),
                prices: p
                    .models
                    .iter()
                    .map(|(m, price)| (m.as_str().into(), *price))
                    .collect(),
            });
        }
        providers
    }

    /// The upstream addresses the providers name.
    pub fn upstreams(&self) -> HashSet<SocketAddr> {
        self.by_upstream.keys().copied().collect()
    }

    /// The provider of an upstream call to `peer` with `host`;
    /// `default`: the name when no section names the upstream
    /// ([`GenAiCall::default_provider`]).
    pub fn provider(
        &self,
        peer: SocketAddr,
        host: Option<&str>,
        default: &'static str,
    ) -> Provider<'_> {
        if let Some(e) = self.named(peer, host) {
            return Provider {
                name: &e.name,
                entry: Some(e),
            };
        }
        let name = default;
        Provider {
            name,
            entry: self.entries.iter().find(|e| &*e.name == name),
        }
    }
}

/// A model label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLabel {
    pub name: Arc<str>,
    /// Named [`OTHER`]: the provider already had its cap of models.
    pub overflow: bool,
}

/// The distinct model names of each provider, capped.
#[derive(Debug)]
pub struct ModelCap {
    max: usize,
    /// FxHash: looked up per call; at most `max` names per provider, so
    /// names chosen to collide cost at most a scan of that many.
    seen: FxHashMap<Box<str>, FxHashSet<Arc<str>>>,
    other: Arc<str>,
    unknown: Arc<str>,
}

impl ModelCap {
    pub fn new(max_per_provider: usize) -> Self {
        ModelCap {
            max: max_per_provider,
            seen: FxHashMap::default(),
            other: Arc::from(OTHER),
            unknown: Arc::from(UNKNOWN_MODEL),
        }
    }

    /// The label of `model` (`None`: [`UNKNOWN_MODEL`], not counted against
    /// the cap) for `provider`.
    pub fn label(&mut self, provider: &str, model: Option<&str>) -> ModelLabel {
        let Some(model) = model else {
            return ModelLabel {
                name: self.unknown.clone(),
                overflow: false,
            };
        };
        let model = &model[..model.floor_char_boundary(MAX_MODEL_BYTES)];
        if !self.seen.contains_key(provider) {
            self.seen.insert(provider.into(), FxHashSet::default());
        }
        let seen = self.seen.get_mut(provider).expect("inserted above");
        if let Some(name) = seen.get(model) {
            return ModelLabel {
                name: name.clone(),
                overflow: false,
            };
        }
        if seen.len() >= self.max {
            return ModelLabel {
                name: self.other.clone(),
                overflow: true,
            };
        }
        let name: Arc<str> = Arc::from(model);
        seen.insert(name.clone());
        ModelLabel {
            name,
            overflow: false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;
    use crate::http::genai::{GenAiApi, GenAiVendor, UsageUnavailable};

    const CONFIG: &str = r#"
[[genai.provider]]
name = "azure"
upstream = "127.0.0.1:9000"
hosts = ["*.openai.azure.com"]
  [genai.provider.models."gpt-4o"]
  input_per_million = 2.5
  output_per_million = 10.0
[[genai.provider]]
name = "openai"
  [genai.provider.models."gpt-4o-mini"]
  input_per_million = 0.15
  output_per_million = 0.6
"#;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn providers() -> Providers {
        Providers::from_config(Some(&Config::parse(CONFIG, Path::new("t.toml")).unwrap()))
    }

    #[test]
    fn provider_by_upstream_then_host_then_api() {
        let p = providers();
        let chat = GenAiApi::OpenAiChat;
        assert_eq!(
            p.provider(addr("127.0.0.1:9000"), None, chat.default_provider())
                .name,
            "azure"
        );
        assert_eq!(
            p.provider(
                addr("10.0.0.1:443"),
                Some("x.openai.azure.com:443"),
                chat.default_provider()
            )
            .name,
            "azure"
        );
        let other = p.provider(
            addr("10.0.0.1:443"),
            Some("api.example.com"),
            chat.default_provider(),
        );
        assert_eq!(other.name, "openai");
        let anthropic = GenAiApi::AnthropicMessages;
        assert_eq!(
            p.provider(addr("10.0.0.1:443"), None, anthropic.default_provider())
                .name,
            "anthropic"
        );
        assert_eq!(
            Providers::from_config(None)
                .provider(
                    addr("127.0.0.1:9000"),
                    None,
                    GenAiApi::OllamaChat.default_provider()
                )
                .name,
            "ollama"
        );
    }

    /// A candidate call of `api` whose answer named `vendor`, for tests
    /// (label/mod.rs's too).
    pub(crate) fn candidate(api: GenAiApi, vendor: Option<GenAiVendor>) -> GenAiCall {
        GenAiCall {
            api,
            candidate: true,
            vendor,
            request_model: None,
            response_model: None,
            streaming: false,
            usage: Err(UsageUnavailable::Absent),
            first_token_ns: None,
        }
    }

    /// A candidate (`POST …/chat/completions` without `/v1`) is a GenAI call
    /// when its answer names a vendor, or a section its upstream or host;
    /// the vendor names the provider where no section does.
    #[test]
    fn candidates_are_confirmed_by_vendor_upstream_or_host() {
        let p = providers();
        let far = addr("10.0.0.1:443");
        let bare = candidate(GenAiApi::OpenAiChat, None);
        assert!(!p.confirms(&bare, far, Some("api.example.com")));
        assert!(!p.confirms(&bare, far, None));
        assert!(p.confirms(&bare, addr("127.0.0.1:9000"), None));
        assert!(p.confirms(&bare, far, Some("eu.openai.azure.com")));
        assert!(Providers::default().confirms(
            &GenAiCall {
                candidate: false,
                ..bare
            },
            far,
            None
        ));
        for (vendor, name) in [
            (GenAiVendor::OpenAi, "openai"),
            (GenAiVendor::Anthropic, "anthropic"),
            (GenAiVendor::AzureOpenAi, "azure.ai.openai"),
            // a gateway names no provider: the API's shape does
            (GenAiVendor::LiteLlm, "openai"),
        ] {
            let call = candidate(GenAiApi::OpenAiChat, Some(vendor));
            assert!(p.confirms(&call, far, None));
            assert_eq!(p.provider(far, None, call.default_provider()).name, name);
        }
        // a named upstream still wins over the answer's headers
        let call = candidate(GenAiApi::OpenAiChat, Some(GenAiVendor::Anthropic));
        let named = p.provider(addr("127.0.0.1:9000"), None, call.default_provider());
        assert_eq!(named.name, "azure");
    }

    #[test]
    fn prices_by_provider_and_model() {
        let p = providers();
        let azure = p.provider(
            addr("127.0.0.1:9000"),
            None,
            GenAiApi::OpenAiChat.default_provider(),
        );
        let price = azure.price(Some("gpt-4o")).unwrap();
        assert_eq!(Provider::cost(price, 1_000_000, 500_000), 7.5);
        // Kong's spec: 25 prompt and 12 completion tokens at 10 per million.
        let ten = Price {
            input_per_million: 10.0,
            output_per_million: 10.0,
        };
        assert_eq!(Provider::cost(ten, 25, 12), 0.00037);
        assert_eq!(azure.price(Some("gpt-4o-mini")), None);
        assert_eq!(azure.price(None), None);
        // A section without addresses prices the calls named by default.
        let openai = p.provider(
            addr("10.0.0.1:443"),
            None,
            GenAiApi::OpenAiChat.default_provider(),
        );
        assert_eq!(
            openai
                .price(Some("gpt-4o-mini"))
                .unwrap()
                .output_per_million,
            0.6
        );
        let ollama = p.provider(
            addr("10.0.0.1:443"),
            None,
            GenAiApi::OllamaChat.default_provider(),
        );
        assert_eq!(ollama.price(Some("gpt-4o-mini")), None);
    }

    #[test]
    fn models_are_capped_per_provider() {
        let mut cap = ModelCap::new(2);
        let label = |cap: &mut ModelCap, p, m| {
            let l = cap.label(p, m);
            (l.name.to_string(), l.overflow)
        };
        assert_eq!(label(&mut cap, "openai", Some("a")), ("a".into(), false));
        assert_eq!(label(&mut cap, "openai", Some("b")), ("b".into(), false));
        assert_eq!(label(&mut cap, "openai", Some("c")), ("other".into(), true));
        assert_eq!(label(&mut cap, "openai", Some("a")), ("a".into(), false));
        assert_eq!(label(&mut cap, "openai", None), ("unknown".into(), false));
        // Another provider has its own cap.
        assert_eq!(label(&mut cap, "ollama", Some("c")), ("c".into(), false));
        // Names are cut at a character boundary.
        let long = format!("{}é{}", "m".repeat(MAX_MODEL_BYTES - 1), "x".repeat(50));
        let cut = label(&mut cap, "ollama", Some(&long)).0;
        assert_eq!(cut, "m".repeat(MAX_MODEL_BYTES - 1));
    }
}
