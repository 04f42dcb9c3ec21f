/** One message of a chat, as both routes pass it on. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** What both routes (native SSE and OpenAI-compatible) ask for, once parsed: the pipeline's input. */
export interface InferenceInput {
  /** The text the model reads, for the estimate and for upstreams that take a prompt. */
  prompt: string;
  /** The chat as sent, for upstreams that take messages (OpenAI-compatible). */
  messages?: readonly ChatMessage[] | undefined;
  maxTokens?: number | undefined;
  /** A pool name or a configured alias (MODEL_ALIASES). */
  pool?: string | undefined;
  userId?: string | undefined;
  channelId?: string | undefined;
  /** The caller reads a stream (the native route always does); default true. */
  stream?: boolean | undefined;
}

/** A chat as the text the model reads: one `role: content` line per message. */
export function chatText(messages: readonly ChatMessage[]): string {
  return messages.map((message) => `${message.role}: ${message.content}`).join('\n');
}
