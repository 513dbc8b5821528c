// Write dialogues to two files, one as they are and one with each
// dialogue's turns reversed, without holding both versions in memory. The main
// process writes the forward file and sends each reversed dialogue through a Queue
// to a writer process; an empty list is the end marker. As in the Python version, this runs
// once for the training set and once for the validation set, each with its own
// Queue and writer process. The dialogues are made up here (the Python version reads Excel
// files); the files go to a temporary directory that is removed at the end.
#include <mproc/mproc.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;
using Lines = std::vector<std::string>;

/// A made-up dialogue: messages with the speaker's role; consecutive messages of
/// one speaker make one turn, as in the Python version.
std::vector<std::pair<bool, std::string>> dialogue(int d) {
  std::vector<std::pair<bool, std::string>> messages;
  for (int m = 0; m < 2 + d % 5; ++m) {
    const bool agent = (m + d) % 3 != 0;
    messages.emplace_back(agent, "message " + std::to_string(m) + " of dialogue " + std::to_string(d));
  }
  return messages;
}

/// The reversed-file writer (the Python version's save_mmi_train_data / save_mmi_val_data).
void save_reversed(const mproc::Queue<Lines>& queue, const fs::path& path) {
  std::ofstream f(path);
  for (Lines save_list = queue.get(); !save_list.empty(); save_list = queue.get()) {
    for (const std::string& line : save_list) f << line;
  }
}

/// Writes the forward file here and the reversed one in a writer process.
void save_dialogues(int first, int count, const fs::path& forward, const fs::path& reversed) {
  const mproc::Queue<Lines> queue;
  mproc::Process p(save_reversed, queue, reversed);
  p.start();
  std::ofstream f(forward);
  for (int d = first; d < first + count; ++d) {
    Lines save_list;  // this dialogue's turns
    std::string turn;
    bool role = false;
    for (const auto& [agent, content] : dialogue(d)) {
      if (!turn.empty() && agent != role) {
        save_list.push_back(turn + "\n");
        turn.clear();
      }
      if (turn.empty()) turn = agent ? "Agent: " : "Customer: ";
      else turn += "; ";
      turn += content;
      role = agent;
    }
    save_list.push_back(turn + "\n");
    for (const std::string& line : save_list) f << line;
    f << '\n';
    std::reverse(save_list.begin(), save_list.end());  // the Python version's save_list[::-1]
    save_list.push_back("\n");
    queue.put(save_list);
  }
  queue.put({});  // the end marker: the writer stops
  p.join();
}

/// The dialogues of a file (blocks separated by blank lines), each a list of turns.
std::vector<Lines> read_dialogues(const fs::path& path) {
  std::vector<Lines> out(1);
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    if (line.empty()) out.emplace_back();
    else out.back().push_back(line);
  }
  out.pop_back();
  return out;
}

int main() {
  const fs::path dir = fs::temp_directory_path() / ("mproc-dialogues-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  bool all_match = true;
  for (const auto& [name, first, count] : {std::tuple{"train", 0, 900}, std::tuple{"val", 900, 100}}) {
    const fs::path forward = dir / (std::string(name) + "_std.txt");
    const fs::path reversed = dir / (std::string(name) + "_mmi.txt");
    save_dialogues(first, count, forward, reversed);

    std::vector<Lines> fwd = read_dialogues(forward);
    const std::vector<Lines> rev = read_dialogues(reversed);
    for (Lines& turns : fwd) std::reverse(turns.begin(), turns.end());
    const bool match = fwd == rev && static_cast<int>(fwd.size()) == count;
    all_match = all_match && match;
    std::cout << name << ": " << fwd.size()
              << " dialogues, reversed file is the forward one with turns reversed: " << (match ? "yes" : "no")
              << std::endl;
  }
  fs::remove_all(dir);
  return all_match ? 0 : 1;
}
