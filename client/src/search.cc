#include "strongroom/client/search.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "https_client.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/indexer/query_parser.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Object;

constexpr std::size_t kMaxAnswerBytes = 1024 * 1024;
constexpr std::size_t kSnippetBytes = 160;

// indexerd's JSON error as an Error of its kind.
Error IndexerError(int status, const std::string& body) {
  std::string code = "http_" + std::to_string(status), message;
  try {
    Object::Ptr json = Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
    if (json && json->has("code")) code = json->getValue<std::string>("code");
    if (json && json->has("message")) message = json->getValue<std::string>("message");
  } catch (const Poco::Exception&) {
  }
  ErrorCode kind = ErrorCode::kInternal;
  switch (status) {
    case 400:
    case 413:
    case 415:
      kind = ErrorCode::kInvalidArgument;
      break;
    case 401:
      kind = ErrorCode::kUnauthenticated;
      break;
    case 403:
      kind = ErrorCode::kPermissionDenied;
      break;
    case 404:
      kind = ErrorCode::kNotFound;
      break;
    case 429:
    case 503:
      kind = ErrorCode::kUnavailable;
      break;
    default:
      break;
  }
  return Error(kind, "the indexer: " + code + (message.empty() ? "" : ": " + message),
               static_cast<std::uint64_t>(status));
}

// A name's words as written and with dots and underscores as spaces (indexerd indexes both).
std::string Split(std::string_view text) {
  std::string split(text);
  for (char& c : split) {
    if (c == '.' || c == '_') c = ' ';
  }
  return split;
}

// The terms of `text`, as indexed (with the split form too).
Result<std::set<std::string>> TermsOf(indexer::TermExtractor& extractor, std::string_view text) {
  indexer::TermSet terms;
  SR_RETURN_IF_ERROR(extractor.AddTerms(text, terms));
  std::string split = Split(text);
  Status added = extractor.AddTerms(split, terms);
  ZeroizeString(split);
  SR_RETURN_IF_ERROR(added);
  return std::set<std::string>(terms.terms().begin(), terms.terms().end());
}

Result<std::string> Snippet(indexer::TermExtractor& extractor, std::string_view text,
                            const std::vector<std::string>& terms) {
  const std::set<std::string> wanted(terms.begin(), terms.end());
  struct Word {
    std::string_view text;
    bool match;
  };
  std::vector<Word> words;
  std::size_t first_match = std::string::npos;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t start = text.find_first_not_of(" \t\r\n", at);
    if (start == std::string::npos) break;
    std::size_t end = text.find_first_of(" \t\r\n", start);
    if (end == std::string::npos) end = text.size();
    const std::string_view word = text.substr(start, end - start);
    SR_ASSIGN_OR_RETURN(std::set<std::string> found, TermsOf(extractor, word));
    const bool match = std::any_of(found.begin(), found.end(),
                                   [&](const std::string& term) { return wanted.contains(term); });
    if (match && first_match == std::string::npos) first_match = words.size();
    words.push_back({word, match});
    at = end;
  }
  if (first_match == std::string::npos) return std::string();
  const std::size_t begin = first_match >= 4 ? first_match - 4 : 0;
  std::string snippet = begin > 0 ? "\u2026 " : "";
  std::size_t i = begin;
  for (; i < words.size() && snippet.size() < kSnippetBytes; ++i) {
    if (i > begin) snippet += ' ';
    if (words[i].match) snippet += kMarkOpen;
    snippet += words[i].text;
    if (words[i].match) snippet += kMarkClose;
  }
  if (i < words.size()) snippet += " \u2026";
  return snippet;
}

}  // namespace

Result<std::string> MakeSnippet(std::string_view text, const std::vector<std::string>& terms,
                                const std::string& language) {
  SR_ASSIGN_OR_RETURN(indexer::TermExtractor extractor, indexer::TermExtractor::New(language));
  return Snippet(extractor, text, terms);
}

Result<std::unique_ptr<Searcher>> Searcher::New(SearcherOptions options, CoreClient& core,
                                                Conversations& sdk) {
  SR_ASSIGN_OR_RETURN(std::unique_ptr<internal::HttpsClient> https,
                      internal::HttpsClient::New(options.indexer_url, options.ca_file,
                                                 options.timeout, "the indexer"));
  return std::unique_ptr<Searcher>(new Searcher(std::move(options), core, sdk, std::move(https)));
}

Searcher::Searcher(SearcherOptions options, CoreClient& core, Conversations& sdk,
                   std::unique_ptr<internal::HttpsClient> https)
    : options_(std::move(options)), core_(core), sdk_(sdk), https_(std::move(https)) {}

Searcher::~Searcher() = default;

Result<Searcher::Found> Searcher::Ask(const std::string& path, const SearchQuery& query,
                                      const std::string& user) {
  Object body;
  if (!user.empty()) body.set("user", user);
  body.set("query", query.query);
  if (query.room) body.set("room", *query.room);
  body.set("limit", query.limit);
  if (query.before) body.set("before", *query.before);
  std::ostringstream text;
  body.stringify(text);
  SR_ASSIGN_OR_RETURN(std::string token, options_.token());
  std::string kms_token;
  if (!user.empty()) {
    if (!options_.kms_token) {
      ZeroizeString(token);
      return Error(ErrorCode::kFailedPrecondition, "a compliance search needs the KMS token");
    }
    Result<std::string> got = options_.kms_token();
    if (!got.ok()) {
      ZeroizeString(token);
      return got.error();
    }
    kms_token = std::move(*got);
  }
  Result<internal::HttpAnswer> answer = [&] {
    std::lock_guard<std::mutex> lock(mutex_);
    internal::HttpsClient::Headers headers;
    if (!kms_token.empty()) headers.emplace_back("X-Kms-Authorization", "Bearer " + kms_token);
    return https_->Exchange("POST", path, token, "application/json", text.str(), kMaxAnswerBytes,
                            headers);
  }();
  ZeroizeString(token);
  ZeroizeString(kms_token);
  if (!answer.ok()) return answer.error();
  if (answer->status != 200) return IndexerError(answer->status, answer->body);
  Found found;
  try {
    Object::Ptr json = Poco::JSON::Parser().parse(answer->body).extract<Object::Ptr>();
    found.language = json->getValue<std::string>("language");
    Poco::JSON::Array::Ptr items = json->getArray("items");
    for (std::size_t i = 0; items && i < items->size(); ++i) {
      Object::Ptr item = items->getObject(static_cast<unsigned>(i));
      found.matches.push_back({item->getValue<std::string>("conversationId"),
                               item->getValue<std::string>("activityId"),
                               item->getValue<std::int64_t>("seq")});
    }
    if (json->has("next") && !json->isNull("next")) {
      found.next = json->getValue<std::int64_t>("next");
    }
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "the indexer's answer is malformed");
  }
  return found;
}

Result<SearchResults> Searcher::Keep(const Found& found, const SearchQuery& query,
                                     std::vector<std::optional<Message>>& messages) {
  SR_ASSIGN_OR_RETURN(indexer::TermExtractor extractor,
                      indexer::TermExtractor::New(found.language));
  SR_ASSIGN_OR_RETURN(std::vector<std::string> terms, indexer::ParseQuery(extractor, query.query));
  SearchResults results;
  results.next = found.next;
  for (std::optional<Message>& message : messages) {
    if (!message) {
      ++results.dropped;  // retracted since, or no longer readable
      continue;
    }
    std::string words;
    if (message->text) words = *message->text;
    if (message->file) words = message->file->name;
    Result<std::set<std::string>> have = TermsOf(extractor, words);
    const bool all = have.ok() && std::all_of(terms.begin(), terms.end(),
                                              [&](const auto& t) { return have->contains(t); });
    if (!all) {
      ++results.dropped;
      ZeroizeString(words);
      continue;
    }
    Result<std::string> snippet = Snippet(extractor, words, terms);
    ZeroizeString(words);
    if (!snippet.ok()) return snippet.error();
    results.hits.push_back({std::move(*message), std::move(*snippet)});
  }
  return results;
}

Result<SearchResults> Searcher::Search(const SearchQuery& query) {
  SR_ASSIGN_OR_RETURN(Found found, Ask("/v1/search", query, ""));
  std::vector<std::optional<Message>> messages;
  for (const IndexSearchMatch& match : found.matches) {
    Result<Activity> activity = core_.GetActivity(match.conversation_id, match.activity_id);
    if (!activity.ok()) {
      if (activity.error().code() != ErrorCode::kNotFound) return activity.error();
      messages.emplace_back();
      continue;
    }
    messages.emplace_back(sdk_.Decrypt(*activity));
  }
  return Keep(found, query, messages);
}

Result<SearchResults> Searcher::ComplianceSearch(const std::string& user,
                                                 const SearchQuery& query) {
  if (user.empty()) return Error(ErrorCode::kInvalidArgument, "a compliance search names a user");
  SR_ASSIGN_OR_RETURN(Found found, Ask("/v1/compliance/search", query, user));
  std::vector<std::optional<Message>> messages;
  for (const IndexSearchMatch& match : found.matches) {
    // The activity at its seq, through the core's compliance reads.
    HistoryQuery at;
    at.before = match.seq + 1;
    at.limit = 1;
    Result<HistoryPage> page = core_.ComplianceHistory(user, match.conversation_id, at);
    if (!page.ok()) {
      if (page.error().code() != ErrorCode::kNotFound) return page.error();
      messages.emplace_back();
      continue;
    }
    if (page->items.empty() || page->items.back().id != match.activity_id) {
      messages.emplace_back();
      continue;
    }
    SR_ASSIGN_OR_RETURN(std::vector<Message> read, sdk_.ReadOnBehalfOf(user, {page->items.back()}));
    messages.emplace_back(read.empty() ? std::optional<Message>() : std::move(read.front()));
  }
  return Keep(found, query, messages);
}

}  // namespace strongroom::client
