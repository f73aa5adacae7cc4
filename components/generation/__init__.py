"""Batched generation shared by every stage that makes a model write (teacher answers, SCRG, EDs).

Example::

    from components.generation import format_prompts, generate
    texts = format_prompts(tokenizer, instructions=["Name a colour."], inputs=[""])
    out = generate(model, tokenizer, texts, GenerationConfig(max_new_tokens=16))
    out.texts[0], out.new_tokens[0], out.tokens_per_second
"""

from components.generation.batched import (
    GenerationOutput,
    PromptTooLongError,
    answer_prompts,
    format_prompts,
    generate,
)

__all__ = ["GenerationOutput", "PromptTooLongError", "answer_prompts", "format_prompts", "generate"]
