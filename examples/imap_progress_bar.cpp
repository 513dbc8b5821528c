// A small multiprocessing framework: lite_multi_process(function,
// events, n_jobs) runs any function over a list of events with imap_unordered and a
// progress bar, and collects the results into a vector. n_jobs = 1 is the Python version's
// debugging trick: here it runs everything in this process (serial mode), so a
// debugger can step into the function.
//
// The events describe queries, {query_id, sql_statement}, as in the Python version. There is
// no database here: each "query" scans a table generated from its name.
#include <mproc/mproc.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

/// Runs function(event) for every event on n_jobs processes, showing a progress bar;
/// the results come in the order they finish.
template <class F, class Events>
auto lite_multi_process(F function, const Events& all_events, std::size_t n_jobs = 1) {
  mproc::Pool pool(function, {.processes = n_jobs, .progress = true, .serial = n_jobs == 1});
  std::vector<typename decltype(pool)::result_type> results;
  for (auto& result : pool.imap_unordered(all_events)) results.push_back(std::move(result));
  pool.close();
  pool.join();
  return results;
}

struct QueryEvent {
  int query_id = 0;
  std::string sql_statement;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(query_id, sql_statement);
  }  // how it travels (cereal)
};

struct QueryStatus {
  int query_id = 0;
  bool ok = false;
  long rows = 0;    // rows the query returned
  long amount = 0;  // their total amount
  template <class Archive>
  void serialize(Archive& ar) {
    ar(query_id, ok, rows, amount);
  }
  bool operator==(const QueryStatus&) const = default;
};

// "SELECT amount FROM sales_<k> WHERE amount > <t>": table sales_<k> has k * 20000 rows
// whose amounts come from a generator seeded with k.
QueryStatus my_function(const QueryEvent& event) {
  QueryStatus status{event.query_id};
  int table = 0, threshold = 0;
  // query
  if (std::sscanf(event.sql_statement.c_str(), "SELECT amount FROM sales_%d WHERE amount > %d", &table, &threshold) !=
      2) {
    return status;  // not ok
  }
  std::mt19937 rows(static_cast<unsigned>(table));
  // process
  for (long i = 0; i < table * 20000L; ++i) {
    const long amount = static_cast<long>(rows() % 1000);
    if (amount > threshold) {
      ++status.rows;
      status.amount += amount;
    }
  }
  // save: a real job would write its rows somewhere here.
  status.ok = true;
  return status;
}

int main() {
  std::vector<QueryEvent> my_events;
  for (int id = 1; id <= 40; ++id) {
    my_events.push_back(
        {id, "SELECT amount FROM sales_" + std::to_string(id) + " WHERE amount > " + std::to_string(10 * id)});
  }

  std::vector<QueryStatus> results = lite_multi_process(my_function, my_events, mproc::cpu_count());

  long ok = 0, rows = 0, amount = 0;
  for (const QueryStatus& r : results) {
    ok += r.ok;
    rows += r.rows;
    amount += r.amount;
  }
  std::cout << results.size() << " queries, " << ok << " ok, " << rows << " rows, total amount " << amount << std::endl;

  // Debugging: n_jobs = 1 runs the same function in this process, with the same results.
  std::vector<QueryStatus> serial = lite_multi_process(my_function, my_events, 1);
  auto by_id = [](const QueryStatus& a, const QueryStatus& b) { return a.query_id < b.query_id; };
  std::sort(results.begin(), results.end(), by_id);
  std::sort(serial.begin(), serial.end(), by_id);
  std::cout << "n_jobs=1 (serial): " << (serial == results ? "same results" : "DIFFERENT results") << std::endl;
  return serial == results ? 0 : 1;
}
