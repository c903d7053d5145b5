//! GenAI API calls (issue 13): what an OpenAI-, Anthropic- or Ollama-shaped
//! exchange adds to its [`crate::Exchange`], read from the captured bytes of
//! its bodies. Only numbers and model names are kept: prompts and
//! completions never leave this module.
//!
//! This file is the interface the agent's metrics, spans and request log use;
//! the scanners that fill it live beside it: `scan` (one call, fed by the
//! HTTP/1 streams' body tap), `request` (the request body), `response` (the
//! response head and a JSON body), `sse` and `ndjson` (streams), `events`
//! (what each API's events say), `usage` (usage objects), `json` (JSON read
//! incrementally and with bounded memory), `buf` (bounded copies).
//!
//! HTTP/2 exchanges are not read (their `genai` is `None`).

mod buf;
mod events;
mod json;
mod ndjson;
mod request;
mod response;
mod scan;
mod sse;
mod usage;

pub(crate) use self::{
    response::{encoded, Media},
    scan::{GenAiScan, Piece},
};

/// Which API a call used, from its request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GenAiApi {
    /// `/v1/chat/completions`
    #[default]
    OpenAiChat,
    /// `/v1/completions`
    OpenAiCompletions,
    /// `/v1/embeddings`
    OpenAiEmbeddings,
    /// `/v1/responses`
    OpenAiResponses,
    /// `/v1/messages`
    AnthropicMessages,
    /// `/api/chat`
    OllamaChat,
    /// `/api/generate`
    OllamaGenerate,
    /// `/api/embed` (and the older `/api/embeddings`)
    OllamaEmbed,
}

impl GenAiApi {
    /// The API of a request path (without its query), matched on its end so
    /// that a gateway's prefix (`/openai/v1/chat/completions`) still counts.
    pub fn from_path(path: &str) -> Option<Self> {
        const BY_SUFFIX: &[(&str, GenAiApi)] = &[
            ("/v1/chat/completions", GenAiApi::OpenAiChat),
            ("/v1/completions", GenAiApi::OpenAiCompletions),
            ("/v1/embeddings", GenAiApi::OpenAiEmbeddings),
            ("/v1/responses", GenAiApi::OpenAiResponses),
            ("/v1/messages", GenAiApi::AnthropicMessages),
            ("/api/chat", GenAiApi::OllamaChat),
            ("/api/generate", GenAiApi::OllamaGenerate),
            ("/api/embed", GenAiApi::OllamaEmbed),
            ("/api/embeddings", GenAiApi::OllamaEmbed),
        ];
        let path = path.strip_suffix('/').unwrap_or(path);
        BY_SUFFIX
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix))
            .map(|(_, api)| *api)
    }

    /// The API of a request path to an upstream the operator named a GenAI
    /// provider (`[[genai.provider]]` `upstream`): [`GenAiApi::from_path`],
    /// or the same paths without their `/v1`, as Azure OpenAI serves them
    /// (`/openai/deployments/{name}/chat/completions`) and as gateways that
    /// mount a provider under a route of their own pass them on. Not for
    /// every upstream: `POST …/messages` or `…/completions` is also an
    /// ordinary API's.
    pub fn from_provider_path(path: &str) -> Option<Self> {
        const BY_SUFFIX: &[(&str, GenAiApi)] = &[
            ("/chat/completions", GenAiApi::OpenAiChat),
            ("/completions", GenAiApi::OpenAiCompletions),
            ("/embeddings", GenAiApi::OpenAiEmbeddings),
            ("/responses", GenAiApi::OpenAiResponses),
            ("/messages", GenAiApi::AnthropicMessages),
        ];
        Self::from_path(path).or_else(|| {
            let path = path.strip_suffix('/').unwrap_or(path);
            BY_SUFFIX
                .iter()
                .find(|(suffix, _)| path.ends_with(suffix))
                .map(|(_, api)| *api)
        })
    }

    /// `gen_ai.operation.name` (OTel GenAI semantic conventions).
    pub fn operation(self) -> &'static str {
        match self {
            Self::OpenAiChat
            | Self::OpenAiResponses
            | Self::AnthropicMessages
            | Self::OllamaChat => "chat",
            Self::OpenAiCompletions | Self::OllamaGenerate => "text_completion",
            Self::OpenAiEmbeddings | Self::OllamaEmbed => "embeddings",
        }
    }

    /// `gen_ai.provider.name` when no `[[genai.provider]]` names the upstream:
    /// the provider whose API shape this is.
    pub fn default_provider(self) -> &'static str {
        match self {
            Self::OpenAiChat
            | Self::OpenAiCompletions
            | Self::OpenAiEmbeddings
            | Self::OpenAiResponses => "openai",
            Self::AnthropicMessages => "anthropic",
            Self::OllamaChat | Self::OllamaGenerate | Self::OllamaEmbed => "ollama",
        }
    }

    /// Whether the call produces output tokens (embeddings do not).
    pub fn generates(self) -> bool {
        !matches!(self, Self::OpenAiEmbeddings | Self::OllamaEmbed)
    }
}

/// Who answered a call, by the names (never the values) of its response
/// headers: each provider marks its answers with headers of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GenAiVendor {
    /// LiteLLM's proxy (`x-litellm-call-id`, `x-litellm-version`, ...), an AI
    /// gateway speaking OpenAI's API; the provider behind it is named by the
    /// provider's own headers it passes on (`llm_provider-openai-version`),
    /// when it does.
    LiteLlm,
    /// `openai-version`, `openai-processing-ms`, `openai-organization`, ...
    OpenAi,
    /// `anthropic-ratelimit-*`, `anthropic-organization-id`.
    Anthropic,
    /// Azure OpenAI: `x-ms-deployment-name`, `x-ms-served-model`,
    /// `azureml-model-session` (it may send `openai-*` headers too).
    AzureOpenAi,
}

impl GenAiVendor {
    /// The vendor a response header `name` marks, if any. LiteLLM's copies
    /// of the provider's headers (`llm_provider-` + name) name the provider.
    pub fn of_header(name: &str) -> Option<Self> {
        // Run on every response header: most names leave at their first
        // letter.
        if !matches!(
            name.as_bytes().first().map(u8::to_ascii_lowercase),
            Some(b'o' | b'a' | b'x' | b'l')
        ) {
            return None;
        }
        fn starts(name: &str, prefix: &str) -> bool {
            name.len() >= prefix.len()
                && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        if starts(name, "llm_provider-") {
            return Self::of_header(&name["llm_provider-".len()..]);
        }
        if starts(name, "openai-") {
            Some(Self::OpenAi)
        } else if starts(name, "anthropic-") {
            Some(Self::Anthropic)
        } else if starts(name, "x-litellm-") {
            Some(Self::LiteLlm)
        } else if [
            "x-ms-deployment-name",
            "x-ms-served-model",
            "azureml-model-session",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            Some(Self::AzureOpenAi)
        } else {
            None
        }
    }

    /// The more telling of two marks: a provider's own over a gateway's,
    /// Azure's over the `openai-*` headers it shares with OpenAI.
    #[must_use]
    pub fn or(self, other: Option<Self>) -> Self {
        other.map_or(self, |o| self.max(o))
    }

    /// `gen_ai.provider.name` (OTel's well-known values); `None` for a
    /// gateway, which names no provider.
    pub fn provider_name(self) -> Option<&'static str> {
        match self {
            Self::LiteLlm => None,
            Self::OpenAi => Some("openai"),
            Self::Anthropic => Some("anthropic"),
            Self::AzureOpenAi => Some("azure.ai.openai"),
        }
    }
}

/// Token counts as the provider reported them, normalised to the OTel
/// meaning: `input` includes cached input (for Anthropic, input_tokens +
/// cache_read_input_tokens + cache_creation_input_tokens).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenAiUsage {
    pub input: u64,
    pub output: u64,
    /// As reported (`total_tokens`), else `input + output`.
    pub total: u64,
    /// Input tokens served from the provider's prompt cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`); 0 when not reported.
    pub cached_input: u64,
}

/// Why a call's usage could not be read; never replaced by a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageUnavailable {
    /// `Content-Encoding` other than identity (gzip, br, ...).
    Compressed,
    /// The bytes holding it were not captured (or the response was cut).
    Truncated,
    /// The response carries none (an OpenAI stream without
    /// `stream_options.include_usage`, an error response).
    Absent,
    /// Captured, but not the JSON the API defines.
    Unparseable,
}

impl UsageUnavailable {
    /// The `reason` label of `gatescope_genai_usage_unavailable_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Compressed => "compressed",
            Self::Truncated => "truncated",
            Self::Absent => "absent",
            Self::Unparseable => "unparseable",
        }
    }
}

/// What a GenAI API call adds to its exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenAiCall {
    pub api: GenAiApi,
    /// The request body's `model`; `None` when it was not in the captured
    /// bytes (a long prompt before it) or the body has none.
    pub request_model: Option<String>,
    /// The response's model (OpenAI `model`, Anthropic `message.model`,
    /// Ollama `model`); `None` when not seen.
    pub response_model: Option<String>,
    /// The request asked for a stream (`"stream": true`), or the response
    /// is `text/event-stream` or `application/x-ndjson`.
    pub streaming: bool,
    pub usage: Result<GenAiUsage, UsageUnavailable>,
    /// Recognised by a path shape that ordinary APIs share (`…/completions`,
    /// `…/messages` without `/v1`): a GenAI call only if its answer names a
    /// vendor ([`GenAiCall::vendor`]) or the operator named the upstream's
    /// host a provider's (the agent decides, before any sink sees it).
    pub candidate: bool,
    /// The vendor the response headers name.
    pub vendor: Option<GenAiVendor>,
    /// Streams: the time of the transfer that carried the first event with
    /// content (an OpenAI delta with text, an Anthropic
    /// `content_block_delta`, an Ollama line with text); for an event split
    /// across transfers, the one that completed it.
    pub first_token_ns: Option<u64>,
}

impl GenAiCall {
    /// The model to label with: the request's, else the response's (as Kong
    /// does), else `None`.
    pub fn model(&self) -> Option<&str> {
        self.request_model
            .as_deref()
            .or(self.response_model.as_deref())
    }

    /// The provider to name when the operator named none: the vendor the
    /// response headers name, else the one whose API shape the call has.
    pub fn default_provider(&self) -> &'static str {
        self.vendor
            .and_then(GenAiVendor::provider_name)
            .unwrap_or(self.api.default_provider())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apis_by_path() {
        assert_eq!(
            GenAiApi::from_path("/v1/chat/completions"),
            Some(GenAiApi::OpenAiChat)
        );
        // Azure OpenAI's paths, and a gateway's own mount of a provider, only
        // for a named provider
        for (path, api) in [
            (
                "/openai/deployments/gpt-4o/chat/completions",
                GenAiApi::OpenAiChat,
            ),
            (
                "/openai/deployments/davinci/completions",
                GenAiApi::OpenAiCompletions,
            ),
            (
                "/openai/deployments/ada/embeddings/",
                GenAiApi::OpenAiEmbeddings,
            ),
            ("/openai/responses", GenAiApi::OpenAiResponses),
            ("/anthropic/messages", GenAiApi::AnthropicMessages),
            ("/api/chat", GenAiApi::OllamaChat),
        ] {
            assert_eq!(GenAiApi::from_provider_path(path), Some(api), "{path}");
        }
        assert_eq!(
            GenAiApi::from_path("/openai/deployments/gpt-4o/chat/completions"),
            None
        );
        assert_eq!(GenAiApi::from_path("/rooms/7/messages"), None);
        assert_eq!(GenAiApi::from_provider_path("/v1/models"), None);
        assert_eq!(
            GenAiApi::from_path("/openai/v1/chat/completions/"),
            Some(GenAiApi::OpenAiChat)
        );
        assert_eq!(
            GenAiApi::from_path("/v1/completions"),
            Some(GenAiApi::OpenAiCompletions)
        );
        assert_eq!(
            GenAiApi::from_path("/v1/messages"),
            Some(GenAiApi::AnthropicMessages)
        );
        assert_eq!(
            GenAiApi::from_path("/api/embed"),
            Some(GenAiApi::OllamaEmbed)
        );
        assert_eq!(GenAiApi::from_path("/v1/models"), None);
        assert_eq!(GenAiApi::from_path("/"), None);
        assert_eq!(GenAiApi::OllamaGenerate.operation(), "text_completion");
        assert!(!GenAiApi::OpenAiEmbeddings.generates());
    }

    #[test]
    fn vendors_by_response_header_names() {
        use GenAiVendor::*;
        for (name, vendor) in [
            ("openai-version", Some(OpenAi)),
            ("OpenAI-Processing-Ms", Some(OpenAi)),
            ("anthropic-ratelimit-requests-limit", Some(Anthropic)),
            ("anthropic-organization-id", Some(Anthropic)),
            ("x-litellm-call-id", Some(LiteLlm)),
            ("llm_provider-openai-version", Some(OpenAi)),
            ("llm_provider-x-request-id", None),
            ("x-ms-deployment-name", Some(AzureOpenAi)),
            ("azureml-model-session", Some(AzureOpenAi)),
            ("x-ms-region", None),
            ("openai", None),
            ("x-request-id", None),
            ("content-type", None),
        ] {
            assert_eq!(GenAiVendor::of_header(name), vendor, "{name}");
        }
        // the most telling of several marks, in any order
        assert_eq!(OpenAi.or(Some(AzureOpenAi)), AzureOpenAi);
        assert_eq!(AzureOpenAi.or(Some(OpenAi)), AzureOpenAi);
        assert_eq!(LiteLlm.or(Some(Anthropic)), Anthropic);
        assert_eq!(OpenAi.or(None), OpenAi);
    }
}

#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod fuzz;
