// DEMO-1's version of /src/lib/greet.js. Its relative import resolves to the
// production /src/lib/format.js, exactly as the production module's does.
import { money } from './format.js';

export const source = 'ticket DEMO-1';

export function greet(name) {
  return `Welcome back, ${name}! DEMO-1 deal: everything under ${money(3)}.`;
}
