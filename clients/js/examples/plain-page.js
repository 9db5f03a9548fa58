// A plain page: <script type="module" src="plain-page.js"></script> (or import from
// "/bookwatch.js" without a bundler).
import {connect} from "@bookwatch/client";

const live = connect({table: "bookings", exactNumbers: true});
live.on("status", (state) => {
  document.title = `Bookings (${state})`;
});
live.on("change", (event) => {
  const price = event.diff?.total_price?.[1];  // "399.90": every digit, as text
  console.log(`${event.actor} ${event.action} booking ${event.id}`, price);
});
live.on("reset", () => location.reload());  // events were missed: refetch what you show
