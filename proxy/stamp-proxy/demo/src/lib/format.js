// Untouched by the sample ticket: a ticket page loads it once, from here.
export function money(amount) {
  return `$${amount.toFixed(2)}`;
}
