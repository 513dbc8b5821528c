// Cleaning a folder of chat exports with Pool.imap, 25 files at
// a time, with a progress bar. Each worker cleans one file: rows with an empty field,
// duplicate rows and the chat system's own messages are dropped. This process writes
// one cleaned file per group of 25, as the Python version does.
//
// The Python version cleans 1000 Excel files; here 200 messy CSV files are made first, in a
// temporary directory that is removed at the end.
#include <mproc/mproc.hpp>

#include <stdlib.h>  // mkdtemp

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace fs = std::filesystem;

/// What cleaning one file gives: the rows kept, and how many were dropped and why.
struct Cleaned {
  std::vector<std::string> rows;
  long empty = 0, duplicate = 0, system = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(rows, empty, duplicate, system);
  }
};

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r");
  return first == std::string::npos ? "" : s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

/// Cleans one "agent_id,customer_id,message" file (the Python version's extract_data).
Cleaned extract_data(const std::string& path, const std::vector<std::string>& system_messages) {
  Cleaned out;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  std::set<std::string> seen;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::istringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) fields.push_back(trim(cell));
    const std::string row = fields.size() == 3 ? fields[0] + ',' + fields[1] + ',' + fields[2] : "";
    if (fields.size() != 3 || std::count(fields.begin(), fields.end(), "") > 0) ++out.empty;  // dropna
    else if (std::count(system_messages.begin(), system_messages.end(), fields[2]) > 0) ++out.system;
    else if (!seen.insert(row).second) ++out.duplicate;  // drop_duplicates
    else out.rows.push_back(row);
  }
  return out;
}

/// Writes n messy files into dir and returns their paths. `planted` counts the bad
/// rows written, by kind, to check the cleaning against.
std::vector<std::string> make_messy_files(const fs::path& dir, int n, const std::vector<std::string>& system_messages,
                                          Cleaned& planted) {
  std::vector<std::string> paths;
  for (int f = 0; f < n; ++f) {
    std::mt19937 gen(static_cast<unsigned>(f));
    paths.push_back((dir / ("chat_" + std::to_string(f) + ".csv")).string());
    std::ofstream out(paths.back());
    out << "agent_id,customer_id,message\n";
    const std::string people = "agent" + std::to_string(f % 7) + ",customer" + std::to_string(f);
    std::vector<std::string> good;
    for (int row = 0, rows = 1000 + static_cast<int>(gen() % 1000); row < rows; ++row) {
      const std::string pad(gen() % 3, ' ');  // stray spaces, which the cleaning trims
      const unsigned kind = gen() % 10;
      if (kind == 0) {
        ++planted.empty;
        out << people << ',' << pad << '\n';
      } else if (kind == 1) {
        ++planted.system;
        out << people << ',' << system_messages[gen() % system_messages.size()] << pad << '\n';
      } else if (kind == 2 && !good.empty()) {
        ++planted.duplicate;
        out << pad << good[gen() % good.size()] << pad << '\n';
      } else {
        good.push_back(people + ",message " + std::to_string(row));
        out << good.back() << pad << '\n';
      }
    }
  }
  return paths;
}

/// A fresh directory under the system's temporary directory, removed with its contents.
struct TempDir {
  std::string path = (fs::temp_directory_path() / "mproc_clean_files_XXXXXX").string();
  TempDir() {
    if (::mkdtemp(path.data()) == nullptr) throw std::runtime_error("cannot create " + path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

int main() {
  // The Python version's sysInfo_list: messages the chat system writes by itself.
  const std::vector<std::string> system_messages = {"I accepted your friend request. You can chat now",
                                                    "This message is not supported. View it on your phone",
                                                    "Red packet"};
  auto tmp = std::make_unique<TempDir>();
  const fs::path root = tmp->path;
  Cleaned planted;
  const std::vector<std::string> all_paths = make_messy_files(root, 200, system_messages, planted);

  // The workers are forked with the lambda and so with system_messages: only paths travel.
  mproc::Pool p([&](const std::string& path) { return extract_data(path, system_messages); }, {.progress = true});
  const std::size_t interval = 25;
  long kept = 0, empty = 0, duplicate = 0, system = 0, written = 0;
  for (std::size_t first = 0; first < all_paths.size(); first += interval) {
    const std::size_t last = std::min(first + interval, all_paths.size());
    const std::vector<std::string> paths(all_paths.begin() + first, all_paths.begin() + last);
    std::ofstream save(root / ("clean_data_" + std::to_string(first) + "_" + std::to_string(last - 1) + ".txt"));
    for (const Cleaned& c : p.imap(paths)) {  // in input order
      for (const std::string& row : c.rows) save << row << '\n';
      kept += static_cast<long>(c.rows.size());
      empty += c.empty;
      duplicate += c.duplicate;
      system += c.system;
    }
    ++written;
  }
  p.close();
  p.join();

  long read_back = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.path().extension() != ".txt") continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) ++read_back;
  }
  std::cout << "files: " << all_paths.size() << ", rows kept: " << kept
            << ", rows dropped: " << empty + duplicate + system << " (empty field " << empty << ", duplicate "
            << duplicate << ", system message " << system << ")\n";
  const bool as_planted = empty == planted.empty && duplicate == planted.duplicate && system == planted.system;
  std::cout << "dropped rows as planted: " << (as_planted ? "yes" : "NO") << '\n';
  std::cout << "wrote " << written << " cleaned files holding " << read_back << " rows\n";
  tmp.reset();
  std::cout << "temporary directory removed: " << (fs::exists(root) ? "NO" : "yes") << '\n';
}
