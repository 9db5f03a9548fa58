// A React component: the booking it shows follows every change, with no stale closure.
import {useState} from "react";
import {useBookwatch} from "@bookwatch/client/react";

type Booking = {id: number; guest: string; total_price: string};

async function getToken(): Promise<string> {
  const response = await fetch("/api/bookwatch-token");  // your backend mints it
  return response.text();
}

export function BookingCard({booking}: {booking: Booking}) {
  const [shown, setShown] = useState(booking);
  const {status, viewers} = useBookwatch({
    getToken, table: "bookings", id: booking.id, exactNumbers: true,
    viewer: "Ben", viewing: `bookings:${booking.id}`,
    onChange: (event) => {
      const price = event.diff?.total_price?.[1];
      if (typeof price === "string") setShown((current) => ({...current, total_price: price}));
    },
  });
  return (
    <p>
      {shown.guest}: {shown.total_price} € · {status} · also here: {viewers.join(", ")}
    </p>
  );
}
