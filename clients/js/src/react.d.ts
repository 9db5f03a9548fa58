// Types of @bookwatch/client/react.
import type {ChangeEvent, ConnectOptions, PresenceEvent, ResetEvent, Status} from "./index.js";

export interface UseBookwatchOptions<N = string> extends Omit<ConnectOptions<N>, "signal"> {
  /** Called with each change; the latest render's function is used. */
  onChange?: (event: ChangeEvent<N>) => void;
  onPresence?: (presence: PresenceEvent) => void;
  /** Events were missed: refetch what you show. */
  onReset?: (reset: ResetEvent) => void;
  /** false: no stream (e.g. until a row is chosen). Default true. */
  enabled?: boolean;
}

export interface BookwatchState {
  status: Status | null;
  /** Who else views `viewing` (presence). */
  viewers: string[];
  lastEventId: string | null;
}

/** Live changes while the component is mounted; closed on unmount. */
export function useBookwatch<N = string>(options: UseBookwatchOptions<N>): BookwatchState;
