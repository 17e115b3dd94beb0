/*
 * pr_window.h: the sliding-window counter in Redis that every process
 * enforcing a shared limit runs (docs/limits.md): relays lease request
 * tokens of an API key from it, the control plane checks session creation
 * with it. One script, so a limit counts the same everywhere, and the same
 * scheme as the relay's local dp_window: DP_WIN_SLOTS (10) slots of
 * window/10 ms, keyed by slot number in one hash.
 *
 * EVAL PR_WINDOW_LUA 1 <hash> <limit> <window_ms> <want>
 * -> {granted, remaining, ms until the current slot ends, ms until the
 *     oldest counted slot leaves the window, the current slot's number}
 * Granted is at most want and never more than the window has room for, so
 * the grants of all callers together never exceed the limit. Time is
 * Redis's own (TIME), so callers' clocks do not matter.
 */
#ifndef PR_WINDOW_H
#define PR_WINDOW_H

#define PR_WINDOW_LUA                                                                              \
	"local limit, win, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"       \
	"local t = redis.call('TIME')\n"                                                           \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                  \
	"local sm = math.floor(win / 10)\n"                                                        \
	"if sm < 1 then sm = 1 end\n"                                                              \
	"local cur = math.floor(now / sm)\n"                                                       \
	"local used, oldest = 0, nil\n"                                                            \
	"local h = redis.call('HGETALL', KEYS[1])\n"                                               \
	"for i = 1, #h, 2 do\n"                                                                    \
	"  local s = tonumber(h[i])\n"                                                             \
	"  if s + 10 <= cur then redis.call('HDEL', KEYS[1], h[i])\n"                              \
	"  else\n"                                                                                 \
	"    used = used + tonumber(h[i + 1])\n"                                                   \
	"    if oldest == nil or s < oldest then oldest = s end\n"                                 \
	"  end\n"                                                                                  \
	"end\n"                                                                                    \
	"local grant = limit - used\n"                                                             \
	"if grant > want then grant = want end\n"                                                  \
	"if grant < 0 then grant = 0 end\n"                                                        \
	"if grant > 0 then\n"                                                                      \
	"  redis.call('HINCRBY', KEYS[1], string.format('%d', cur), grant)\n"                      \
	"  redis.call('PEXPIRE', KEYS[1], win + sm)\n"                                             \
	"  if oldest == nil then oldest = cur end\n"                                               \
	"end\n"                                                                                    \
	"local reset = 0\n"                                                                        \
	"if oldest ~= nil then reset = (oldest + 10) * sm - now end\n"                             \
	"return {grant, limit - used - grant, (cur + 1) * sm - now, reset, cur}\n"

/* EVAL PR_WINDOW_REFUND_LUA 1 <hash> <slot> <n>: n tokens granted in slot
 * and never spent go back (while that slot still counts), so tokens a relay
 * drops at a slot's end are not lost to the others. */
#define PR_WINDOW_REFUND_LUA                                                                       \
	"if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and\n"                                    \
	"   redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2])) < 0 then\n"                \
	"  redis.call('HSET', KEYS[1], ARGV[1], 0)\n"                                              \
	"end\n"                                                                                    \
	"return 0\n"

#endif
