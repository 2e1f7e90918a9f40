/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Drops: every drop carries Cilium's reason code and the source file and
 * line that decided it (FX_DROP stamps __FILE_NAME__'s id and __LINE__ where
 * it is written).
 */
#ifndef FX_DROP_H
#define FX_DROP_H

#include <linux/pkt_cls.h>
#include "ctx.h"
#include "events.h"

static __always_inline int fx_set_drop(struct fx_ctx *ctx, __u16 reason, __u8 file, __u16 line)
{
	ctx->drop_reason = reason;
	ctx->drop_file = file;
	ctx->drop_line = line;
	return TC_ACT_SHOT;
}

/*
 * The id of the source file a drop is written in, derived at compile time from
 * __FILE_NAME__ as Cilium's source_info.h does (the string compare folds to a
 * constant), so that file and line always agree. The ids are enum fx_file
 * (include/fx_abi.h); a test ties this table to the C# names.
 */
#define fx_file_case(id, name)						\
	do {								\
		if (!__builtin_strcmp(file_name, name))			\
			return id;					\
	} while (0)

static __always_inline __u8 fx_file_id(const char *const file_name)
{
	fx_file_case(FX_FILE_DATAPATH, "datapath.bpf.c");
	fx_file_case(FX_FILE_POLICY, "policy.h");
	fx_file_case(FX_FILE_CONNTRACK, "conntrack.h");
	fx_file_case(FX_FILE_LB, "lb.h");
	fx_file_case(FX_FILE_NAT, "nat.h");
	fx_file_case(FX_FILE_PARSE, "parse.h");
	return FX_FILE_UNKNOWN;
}

/* Records the drop decision in ctx (reason, this file, this line) and evaluates to TC_ACT_SHOT. */
#define FX_DROP(ctx, reason) fx_set_drop(ctx, reason, fx_file_id(__FILE_NAME__), __LINE__)

static __always_inline void fx_emit_drop(struct fx_ctx *ctx)
{
	struct fx_drop_event *ev;

	if (!fx_kind_enabled(FX_KIND_DROP))
		return;
	ev = fx_reserve(FX_KIND_DROP, sizeof(*ev));
	if (!ev)
		return;
	fx_event_tuple(&ev->tuple, ctx);
	ev->meta = ctx->meta;
	ev->reason = ctx->drop_reason;
	ev->line = ctx->drop_line;
	ev->file = ctx->drop_file;
	ev->ct_state = ctx->ct_state;
	ev->pad = 0;
	ev->rule_id = ctx->drop_rule;
	ev->pad2 = 0;
	fx_submit(ev, FX_KIND_DROP);
}

#endif /* FX_DROP_H */
