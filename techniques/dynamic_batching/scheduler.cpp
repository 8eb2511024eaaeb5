#include "techniques/dynamic_batching/scheduler.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/error.hpp"

namespace aiopt::dynamic_batching {

namespace {

struct Live {
  std::vector<std::int32_t> tokens;  // the prompt, then each output token as it is produced
  std::size_t computed = 0;          // positions in the cache
  std::size_t generated = 0;
  bool done = false;
};

class Server {
 public:
  Server(std::span<const Request> requests, std::span<const std::vector<std::int32_t>> prompts,
         const SchedulerSettings& settings, nn::BlockTables& tables, Executor& executor)
      : requests_(requests), settings_(settings), tables_(tables), exec_(executor), live_(requests.size()) {
    if (prompts.size() != requests.size()) throw std::invalid_argument("serve: one prompt per request");
    if (tables.used_blocks() != 0) throw std::invalid_argument("serve: the block tables must start empty");
    const bool paged = settings.policy == Policy::continuous;
    const std::size_t room = paged ? tables.block_count() * tables.block_size() : tables.block_size();
    log_.requests.resize(requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Request& r = requests[i];
      if (prompts[i].size() != r.prompt_len) throw std::invalid_argument("serve: a prompt of the wrong length");
      if (i > 0 && r.arrival_s < requests[i - 1].arrival_s) throw std::invalid_argument("serve: unsorted arrivals");
      if (cache_positions(r) > room)
        throw InputError("dynamic_batching: request " + std::to_string(i) + " needs " +
                         std::to_string(cache_positions(r)) + " cache positions (prompt " + std::to_string(r.prompt_len) +
                         " + output " + std::to_string(r.output_len) + " − 1) and " +
                         (paged ? "the whole pool holds " : "a slot holds ") + std::to_string(room));
      live_[i].tokens = prompts[i];
      RequestRecord& rec = log_.requests[i];
      rec.arrival_s = r.arrival_s;
      rec.prompt_len = r.prompt_len;
      rec.output_len = r.output_len;
    }
  }

  ServeLog run() {
    const std::size_t n = requests_.size();
    while (finished_ < n) {
      const double now = exec_.now();
      while (next_ < n && requests_[next_].arrival_s <= now) waiting_.push_back(next_++);
      double deadline = std::numeric_limits<double>::infinity();
      if (settings_.policy == Policy::continuous) admit_continuous();
      else admit_batch(now, deadline);

      batch_.clear();
      chunks_.clear();
      shape_ = {};
      if (settings_.policy == Policy::continuous) plan_continuous();
      else plan_batch();
      if (batch_.empty()) {
        const double arrival = next_ < n ? requests_[next_].arrival_s : std::numeric_limits<double>::infinity();
        const double until = std::min(arrival, deadline);
        if (until == std::numeric_limits<double>::infinity())
          throw std::logic_error("dynamic_batching: nothing to run and nothing to wait for");
        exec_.wait_until(until);
        continue;
      }
      step(now);
    }
    if (tables_.used_blocks() != 0) throw std::logic_error("dynamic_batching: blocks left in use after serving");
    return std::move(log_);
  }

 private:
  bool request_level() const { return settings_.policy != Policy::continuous; }

  // Sequential, static, dynamic: a new batch only when the last one has ended.
  void admit_batch(double now, double& deadline) {
    if (!running_.empty() || waiting_.empty()) return;
    const std::size_t cap = settings_.policy == Policy::sequential ? 1 : settings_.max_batch;
    const double oldest = requests_[waiting_.front()].arrival_s;
    bool go = true;
    if (settings_.policy == Policy::static_batch || settings_.policy == Policy::dynamic) {
      const double wait = settings_.policy == Policy::static_batch ? settings_.batch_timeout_s : settings_.window_s;
      go = waiting_.size() >= cap || now >= oldest + wait;
      if (!go) deadline = oldest + wait;
    }
    if (!go) return;
    while (running_.size() < cap && !waiting_.empty()) {
      const std::size_t r = waiting_.front();
      // One slot: the tables' block, sized for the longest request.
      if (!tables_.reserve(r, tables_.block_size()))
        throw std::logic_error("dynamic_batching: a contiguous slot was not free");
      waiting_.pop_front();
      running_.push_back(r);
    }
    note_blocks();
  }

  // Continuous: first come, first served, while a step has room and the pool has blocks for the
  // whole known context (so a prefill never waits for blocks).
  void admit_continuous() {
    while (running_.size() < settings_.max_batch && !waiting_.empty()) {
      const std::size_t r = waiting_.front();
      if (!tables_.reserve(r, live_[r].tokens.size())) break;
      waiting_.pop_front();
      running_.push_back(r);
    }
    note_blocks();
  }

  void add(std::size_t r, std::size_t len) {
    Live& l = live_[r];
    batch_.push_back({r, std::span<const std::int32_t>(l.tokens).subspan(l.computed, len)});
    chunks_.push_back(r);
    shape_.add(l.computed, len);
  }

  // Request-level: every unfinished sequence of the batch, its whole prompt at once, then a token.
  void plan_batch() {
    for (const std::size_t r : running_)
      if (!live_[r].done) add(r, live_[r].tokens.size() - live_[r].computed);
  }

  void plan_continuous() {
    // Decode tokens first, each with a block for its new position, preempting from the back.
    for (std::size_t i = 0; i < running_.size(); ++i) {
      const std::size_t r = running_[i];
      Live& l = live_[r];
      if (l.computed == 0 || l.computed + 1 != l.tokens.size()) continue;
      bool preempted_self = false;
      while (!tables_.reserve(r, l.computed + 1)) {
        const std::size_t victim = running_.back();
        preempt(victim);
        if (victim == r) {
          preempted_self = true;
          break;
        }
      }
      if (!preempted_self) add(r, 1);
    }
    note_blocks();
    // Then prompt chunks in admission order, while the step's token budget lasts.
    std::size_t budget = settings_.max_step_tokens > batch_.size() ? settings_.max_step_tokens - batch_.size() : 0;
    for (const std::size_t r : running_) {
      Live& l = live_[r];
      const std::size_t left = l.tokens.size() - l.computed;
      if (left <= 1 && l.computed > 0) continue;  // decoding, planned above
      if (budget == 0) break;
      const std::size_t len = std::min(left, budget);
      add(r, len);
      budget -= len;
    }
  }

  void preempt(std::size_t r) {
    tables_.release(r);
    live_[r].computed = 0;
    ++log_.requests[r].preemptions;
    ++log_.preemptions;
    running_.erase(std::find(running_.begin(), running_.end(), r));
    waiting_.push_front(r);
  }

  void step(double start) {
    const std::vector<std::int32_t> next = exec_.run(batch_, shape_);
    const double t = exec_.now();
    StepRecord s;
    s.start_s = start;
    s.ms = (t - start) * 1e3;
    s.shape = shape_;
    for (std::size_t k = 0; k < chunks_.size(); ++k) {
      const std::size_t r = chunks_[k];
      Live& l = live_[r];
      l.computed += batch_[k].tokens.size();
      if (l.computed == l.tokens.size()) produce(r, next.at(k), t);
    }
    if (request_level() && !running_.empty() &&
        std::all_of(running_.begin(), running_.end(), [&](std::size_t r) { return live_[r].done; })) {
      for (const std::size_t r : running_) finish(r, t);
      running_.clear();
    }
    s.reserved_positions = tables_.reserved_positions();
    s.written_positions = tables_.written_positions();
    s.cached_sequences = tables_.sequence_count();
    log_.steps.push_back(s);
  }

  void produce(std::size_t r, std::int32_t token, double t) {
    Live& l = live_[r];
    RequestRecord& rec = log_.requests[r];
    rec.tokens.push_back(token);
    rec.token_s.push_back(t);
    l.tokens.push_back(token);
    if (++l.generated == 1) rec.first_token_s = t;
    rec.last_token_s = t;
    if (l.generated < rec.output_len) return;
    l.done = true;
    if (!request_level()) {
      finish(r, t);
      running_.erase(std::find(running_.begin(), running_.end(), r));
    }
  }

  void finish(std::size_t r, double t) {
    log_.requests[r].done_s = t;
    tables_.release(r);
    ++finished_;
  }

  void note_blocks() { log_.peak_blocks = std::max(log_.peak_blocks, tables_.used_blocks()); }

  std::span<const Request> requests_;
  const SchedulerSettings& settings_;
  nn::BlockTables& tables_;
  Executor& exec_;
  std::vector<Live> live_;
  ServeLog log_;
  std::deque<std::size_t> waiting_;
  std::vector<std::size_t> running_;  // in admission order
  std::size_t next_ = 0, finished_ = 0;
  std::vector<nn::Gpt::RaggedSequence> batch_;
  std::vector<std::size_t> chunks_;  // the request of each batch_ entry
  StepShape shape_;
};

}  // namespace

ServeLog serve(std::span<const Request> requests, std::span<const std::vector<std::int32_t>> prompts,
               const SchedulerSettings& settings, nn::BlockTables& tables, Executor& executor) {
  return Server(requests, prompts, settings, tables, executor).run();
}

}  // namespace aiopt::dynamic_batching
