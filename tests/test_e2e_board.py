"""Issue 2: the public board: posts and nested comments as one CXone thread, replies as comments."""

from __future__ import annotations

from tests.harness import BOARD_CHANNEL, World


async def test_post_and_nested_comments_form_one_thread_with_reply_to(world: World) -> None:
    post = await world.wh.user_posts("usr_giraffe", "Lost: one spot", "Has anyone seen my spot?")
    top = await world.wh.user_comments("usr_lion", post, "Check under the acacia")
    nested = await world.wh.user_comments("usr_giraffe", post, "Thanks Leo!", parent_comment_id=top)
    await world.wh.flush()
    got = await world.cxone.wait_for(
        lambda: (
            world.cxone.messages_in(BOARD_CHANNEL, post)
            if len(world.cxone.messages_in(BOARD_CHANNEL, post)) == 3
            else None
        )
    )
    first, second, third = (m.body for m in got)
    assert [m.message_id for m in got] == [post, top, nested]
    assert first["title"] == "Lost: one spot"
    assert first["url"] == world.wh.world.posts[post].permalink
    assert "replyToMessage" not in first
    assert second["replyToMessage"] == {"idOnExternalPlatform": post}
    assert third["replyToMessage"] == {"idOnExternalPlatform": top}
    assert third["isReplyToSpecificMessage"] is True
    assert {m.body["thread"]["idOnExternalPlatform"] for m in got} == {post}
    assert not world.cxone.violations


async def test_agent_reply_to_a_comment_becomes_a_nested_comment(world: World) -> None:
    post = await world.wh.user_posts("usr_hippo", "Mud bath rules", "Who made them?")
    comment = await world.wh.user_comments("usr_zebra", post, "The elders did")
    await world.wh.flush()
    await world.delivered(BOARD_CHANNEL, comment)
    status, body = await world.cxone.agent_reply(
        BOARD_CHANNEL, post, "The Jungle did!", reply_to=comment
    )
    assert status == 200, body
    created = world.wh.world.posts[post].comments[-1]
    assert created.author_id == "usr_jungle"
    assert created.parent_comment_id == comment
    assert created.body == "The Jungle did!"
    assert body["message"]["idOnExternalPlatform"] == created.id
    assert body["message"]["url"] == created.permalink


async def test_agent_reply_to_the_post_is_a_top_level_comment(world: World) -> None:
    post = await world.wh.user_posts("usr_lion", "Hunting hours", "When?")
    await world.wh.flush()
    await world.delivered(BOARD_CHANNEL, post)
    status, body = await world.cxone.agent_reply(
        BOARD_CHANNEL, post, "Never on the board.", reply_to=post, endpoint="legacy"
    )
    assert status == 200, body
    created = world.wh.world.posts[post].comments[-1]
    assert created.parent_comment_id is None
    assert body == {"idOnExternalPlatform": created.id}


async def test_a_board_reply_over_the_limit_is_refused_clearly(world: World) -> None:
    post = await world.wh.user_posts("usr_lion", "Essay", "Write me an essay")
    await world.wh.flush()
    await world.delivered(BOARD_CHANNEL, post)
    status, body = await world.cxone.agent_reply(BOARD_CHANNEL, post, "x" * 1001)
    assert status == 422
    assert "1000" in body["message"]
    assert world.wh.world.posts[post].comments == []
