// A strict reader of the Prometheus text exposition format 0.0.4, for tests: it checks what a
// scraper relies on (metric and label names, escaped label values, numbers, a TYPE line before a
// family's samples, no repeated series, histogram buckets cumulative and ending at +Inf = _count)
// and returns the samples.
#ifndef STRONGROOM_TESTS_KMS_PROMETHEUS_TEXT_H_
#define STRONGROOM_TESTS_KMS_PROMETHEUS_TEXT_H_

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::testing {

struct PrometheusSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

namespace prometheus_detail {

inline bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
inline bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }

inline Error Bad(std::size_t line, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "line " + std::to_string(line) + ": " + what);
}

inline std::string FamilyOf(const std::string& name,
                            const std::map<std::string, std::string>& types) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = types.find(base);
      if (it != types.end() && (it->second == "histogram" || it->second == "summary")) return base;
    }
  }
  return name;
}

}  // namespace prometheus_detail

inline Result<std::vector<PrometheusSample>> ParsePrometheus(const std::string& text) {
  using namespace prometheus_detail;
  std::vector<PrometheusSample> out;
  std::map<std::string, std::string> types;
  std::set<std::string> families_with_samples;
  std::set<std::string> series;
  std::istringstream in(text);
  std::string line;
  std::size_t n = 0;
  if (!text.empty() && text.back() != '\n') return Bad(0, "the text must end with a newline");
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (kind == "TYPE") {
        std::string type;
        words >> type;
        if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
            type != "untyped") {
          return Bad(n, "unknown type " + type);
        }
        if (types.count(name)) return Bad(n, "second TYPE line for " + name);
        if (families_with_samples.count(name)) return Bad(n, "TYPE after samples of " + name);
        types[name] = type;
      }
      continue;
    }
    PrometheusSample sample;
    std::size_t i = 0;
    if (!IsNameStart(line[i])) return Bad(n, "bad metric name");
    while (i < line.size() && IsNameChar(line[i])) ++i;
    sample.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const std::size_t start = i;
        if (!IsNameStart(line[i]) || line[i] == ':') return Bad(n, "bad label name");
        while (i < line.size() && IsNameChar(line[i]) && line[i] != ':') ++i;
        const std::string label = line.substr(start, i - start);
        if (line.compare(i, 2, "=\"") != 0) return Bad(n, "label without =\"");
        i += 2;
        std::string value;
        for (;;) {
          if (i >= line.size()) return Bad(n, "unterminated label value");
          const char c = line[i++];
          if (c == '"') break;
          if (c == '\\') {
            if (i >= line.size()) return Bad(n, "dangling escape");
            const char e = line[i++];
            if (e == 'n') {
              value += '\n';
            } else if (e == '\\' || e == '"') {
              value += e;
            } else {
              return Bad(n, "bad escape");
            }
          } else {
            value += c;
          }
        }
        if (!sample.labels.emplace(label, value).second) return Bad(n, "repeated label " + label);
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) return Bad(n, "unterminated label set");
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') return Bad(n, "no space before the value");
    const std::string value = line.substr(i + 1);
    if (value == "+Inf") {
      sample.value = INFINITY;
    } else if (value == "-Inf") {
      sample.value = -INFINITY;
    } else if (value == "NaN") {
      sample.value = NAN;
    } else {
      char* end = nullptr;
      sample.value = std::strtod(value.c_str(), &end);
      if (value.empty() || end != value.c_str() + value.size()) {
        return Bad(n, "bad value '" + value + "'");
      }
    }
    const std::string family = FamilyOf(sample.name, types);
    if (!types.count(family)) return Bad(n, "no TYPE line before " + sample.name);
    families_with_samples.insert(family);
    std::string key = sample.name;
    for (const auto& [k, v] : sample.labels) key += "\x1f" + k + "=" + v;
    if (!series.insert(key).second) return Bad(n, "repeated series " + sample.name);
    out.push_back(std::move(sample));
  }
  // Histograms: per label set (without le), buckets never decrease and +Inf equals _count.
  for (const auto& [family, type] : types) {
    if (type != "histogram") continue;
    std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> buckets;
    std::map<std::map<std::string, std::string>, double> counts;
    for (const PrometheusSample& s : out) {
      if (s.name == family + "_bucket") {
        auto labels = s.labels;
        if (!labels.count("le")) return Bad(0, family + " bucket without le");
        const std::string le = labels["le"];
        labels.erase("le");
        buckets[labels].emplace_back(le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr),
                                     s.value);
      } else if (s.name == family + "_count") {
        counts[s.labels] = s.value;
      }
    }
    for (const auto& [labels, list] : buckets) {
      double previous = 0;
      for (const auto& [le, value] : list) {
        if (value < previous) return Bad(0, family + " buckets decrease");
        previous = value;
      }
      if (list.empty() || !std::isinf(list.back().first)) return Bad(0, family + " lacks +Inf");
      if (!counts.count(labels) || counts[labels] != list.back().second) {
        return Bad(0, family + " +Inf bucket differs from _count");
      }
    }
  }
  return out;
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_KMS_PROMETHEUS_TEXT_H_
