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

Result<SearchResults> Searcher::Search(const SearchQuery& query) {
  Object body;
  body.set("query", query.query);
  if (query.room) body.set("room", *query.room);
  body.set("limit", query.limit);
  if (query.before) body.set("before", *query.before);
  std::ostringstream text;
  body.stringify(text);
  SR_ASSIGN_OR_RETURN(std::string token, options_.token());
  Result<internal::HttpAnswer> answer = [&] {
    std::lock_guard<std::mutex> lock(mutex_);
    return https_->Exchange("POST", "/v1/search", token, "application/json", text.str(),
                            kMaxAnswerBytes);
  }();
  ZeroizeString(token);
  if (!answer.ok()) return answer.error();
  if (answer->status != 200) return IndexerError(answer->status, answer->body);

  struct Match {
    std::string conversation_id, activity_id;
  };
  std::vector<Match> matches;
  SearchResults results;
  std::string language;
  try {
    Object::Ptr json = Poco::JSON::Parser().parse(answer->body).extract<Object::Ptr>();
    language = json->getValue<std::string>("language");
    Poco::JSON::Array::Ptr items = json->getArray("items");
    for (std::size_t i = 0; items && i < items->size(); ++i) {
      Object::Ptr item = items->getObject(static_cast<unsigned>(i));
      matches.push_back({item->getValue<std::string>("conversationId"),
                         item->getValue<std::string>("activityId")});
    }
    if (json->has("next") && !json->isNull("next")) {
      results.next = json->getValue<std::int64_t>("next");
    }
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "the indexer's answer is malformed");
  }
  SR_ASSIGN_OR_RETURN(indexer::TermExtractor extractor, indexer::TermExtractor::New(language));
  SR_ASSIGN_OR_RETURN(std::vector<std::string> terms, indexer::ParseQuery(extractor, query.query));

  for (const Match& match : matches) {
    Result<Activity> activity = core_.GetActivity(match.conversation_id, match.activity_id);
    if (!activity.ok()) {
      if (activity.error().code() != ErrorCode::kNotFound) return activity.error();
      ++results.dropped;  // retracted since, or no longer the user's
      continue;
    }
    SearchHit hit{sdk_.Decrypt(*activity), ""};
    std::string words;
    if (hit.message.text) words = *hit.message.text;
    if (hit.message.file) words = hit.message.file->name;
    Result<std::set<std::string>> found = TermsOf(extractor, words);
    const bool all = found.ok() && std::all_of(terms.begin(), terms.end(),
                                               [&](const auto& t) { return found->contains(t); });
    if (!all) {
      ++results.dropped;
      ZeroizeString(words);
      continue;
    }
    Result<std::string> snippet = Snippet(extractor, words, terms);
    ZeroizeString(words);
    if (!snippet.ok()) return snippet.error();
    hit.snippet = std::move(*snippet);
    results.hits.push_back(std::move(hit));
  }
  return results;
}

}  // namespace strongroom::client
